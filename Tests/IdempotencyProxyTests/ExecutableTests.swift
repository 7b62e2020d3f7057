import DemoUpstreamKit
import Foundation
import IdempotencyCore
import TestSupport
import Testing

/// The `idemproxy` binary itself: CLI contract (docs/behaviour.md §1) and signals.
@Suite struct ExecutableTests {
    static let binary = ChildProcess.builtProduct("idemproxy")
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    private func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> (Int32?, String, String) {
        try await runToEnd(Self.binary, arguments, environment: environment)
    }

    @Test func checkAcceptsTheExampleFileAndPrintsEveryKey() async throws {
        let (status, out, _) = try await run(["--config", Self.repository.appendingPathComponent("config/idemproxy.conf").path, "--check"])
        #expect(status == 0)
        let lines = out.split(separator: "\n")
        // Every key but store_5xx and admin_token_file, whose effects release_statuses and
        // admin_token print.
        #expect(lines.count == ConfigLoader.keyNames.count - 2)
        #expect(!out.contains("store_5xx"))
        #expect(lines.allSatisfy { $0.contains(" = ") })
        #expect(out.contains("listen = 127.0.0.1:8081\n"))
    }

    @Test func checkFindsACertificateAndAKeyThatDoNotBelongTogether() async throws {
        let certificates = try TestCertificates()
        let file = certificates.directory + "/idemproxy.conf"
        let c = certificates
        // Each file's lines, and how `--check` must begin its complaint.
        let cases: [([String], String)] = [
            (["redis_url = rediss://127.0.0.1:6380/0", "redis_tls_cert_file = \(c.clientCertFile)", "redis_tls_key_file = \(c.serverKeyFile)"],
             "\(file):3: redis_tls_key_file: \(c.serverKeyFile) is not the private key of \(c.clientCertFile)"),
            (["tls_cert_file = \(c.serverCertFile)", "tls_key_file = \(c.clientKeyFile)"],
             "\(file):2: tls_key_file: \(c.clientKeyFile) is not the private key of \(c.serverCertFile)"),
            (["upstream = https://127.0.0.1:8443", "upstream_tls_cert_file = \(c.clientCertFile)", "upstream_tls_key_file = \(c.serverKeyFile)"],
             "\(file):3: upstream_tls_key_file: \(c.serverKeyFile) is not the private key of \(c.clientCertFile)"),
            (["postgres_url = postgres://db/x?sslmode=verify-full&sslrootcert=\(c.serverKeyFile)"],
             "\(file):1: postgres_url: sslrootcert \(c.serverKeyFile) is not a PEM certificate bundle"),
            (["redis_url = rediss://127.0.0.1:6380/0", "redis_tls_ca_file = \(file)"],
             "\(file):2: redis_tls_ca_file: \(file) is not a PEM certificate bundle"),
        ]
        for (lines, complaint) in cases {
            try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
            let (status, _, err) = try await run(["--config", file, "--check"])
            #expect(status == 2, "\(lines)")
            #expect(err.hasPrefix(complaint), "\(err)")
        }
    }

    @Test func precedenceAppliesOnTheCommandLine() async throws {
        let (status, out, _) = try await run(
            ["--set", "log_level=error", "--check"], environment: ["IDEMPROXY_LOG_LEVEL": "debug", "IDEMPROXY_KEY_PREFIX": "env:"])
        #expect(status == 0)
        #expect(out.contains("log_level = error\n"))
        #expect(out.contains("key_prefix = env:\n"))
    }

    @Test func badConfigurationExits2WithEveryProblemAndStartsNothing() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).conf")
        defer { try? FileManager.default.removeItem(at: file) }
        try "listen = 127.0.0.1:1\nbogus = 1\n\nlock_ttl = 5\n".write(to: file, atomically: true, encoding: .utf8)
        let (status, out, err) = try await run(["--config", file.path, "--set", "methods="])
        #expect(status == 2)
        #expect(out.isEmpty)
        #expect(err == """
            \(file.path):2: unknown key "bogus"
            \(file.path):4: lock_ttl: expected a duration such as 250ms, 30s, 5m, 24h or 30d, got "5"
            --set methods: methods: methods must name at least one method

            """)
    }

    @Test func theBinaryProtectsRequestsWithARedisCluster() async throws {
        let cluster = try await RedisClusterProcess()
        try await withDemoUpstream { upstream in
            let port = try FreePort.next()
            let child = try ChildProcess(Self.binary, [
                "--set", "listen=127.0.0.1:\(port)", "--set", "upstream=http://127.0.0.1:\(upstream.port)",
                "--set", "redis_cluster=true", "--set", "redis_url=\(cluster.seedsURL)", "--set", "admin_listen=off",
                // The first request may meet the cluster's discovery, slow on a busy machine.
                "--set", "redis_timeout=5s",
            ])
            defer { child.signal(SIGKILL); _ = child.wait() }
            try FreePort.waitUntilListening(port: port)
            let responses = try await blocking {
                try (0..<2).map { _ in
                    try RawHTTPClient(port: port).request("POST", "/charges", headers: [("Idempotency-Key", "cluster-1")], body: Array("x".utf8))
                }
            }
            #expect(responses.map(\.status) == [201, 201])
            #expect(responses[1].header("Idempotent-Replayed") == "true")
            #expect(responses[1].body == responses[0].body)
            #expect(upstream.executions("/charges") == 1)
        }
    }

    @Test func sigtermLetsASlowRequestFinishAndExits0() async throws {
        try await withDemoUpstream { upstream in
            let port = try FreePort.next()
            let child = try ChildProcess(Self.binary, [
                "--set", "listen=127.0.0.1:\(port)", "--set", "upstream=http://127.0.0.1:\(upstream.port)",
                "--set", "redis_url=\(SharedRedis.url)", "--set", "admin_listen=off",
                "--set", "key_prefix=test:\(UUID().uuidString.prefix(8)):", "--set", "shutdown_grace=5s",
            ])
            try FreePort.waitUntilListening(port: port)
            let response = Task {
                try await blocking { try RawHTTPClient(port: port).request("POST", "/charges?delay=700", headers: [("Idempotency-Key", "k")], body: Array("x".utf8)) }
            }
            try await upstream.waitUntilExecuting("/charges")
            child.signal(SIGTERM)
            let status = try await blocking { child.wait() }
            #expect(status == 0, "stderr: \(child.stderr)")
            #expect(try await response.value.status == 201)
            #expect(upstream.executions("/charges") == 1)
        }
    }
}
