import Foundation
import TestSupport
import Testing

/// docs/behaviour.md, TLS on `listen`: HTTPS with `tls_cert_file` and `tls_key_file`, tried with curl as the
/// client and certificates `openssl` made for the test.
@Suite struct HTTPSListenTests {
    /// curl's output (`-i`: the head, then the body) and exit status.
    private static func curl(_ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let run = try await runToEnd("/usr/bin/curl", ["-s", "-i", "--max-time", "10"] + arguments, timeout: 15)
        return (run.status, run.stdout)
    }

    private static func settings(_ certificates: TestCertificates) -> [String: String] {
        ["tls_cert_file": certificates.serverCertFile, "tls_key_file": certificates.serverKeyFile]
    }

    @Test func clientsSpeakHTTPSAndTheUpstreamHearsItFromXForwardedProto() async throws {
        let certificates = try TestCertificates()
        try await withProxy(Self.settings(certificates)) { h in
            let url = "https://127.0.0.1:\(h.port)"
            let post = ["--cacert", certificates.caFile, "-X", "POST", "-H", "Idempotency-Key: k", "-d", "x", url + "/charges"]
            let first = try await Self.curl(post)
            #expect(first.status == 0)
            #expect(first.output.hasPrefix("HTTP/1.1 201"))
            let retry = try await Self.curl(post)
            #expect(retry.output.lowercased().contains("idempotent-replayed: true"))
            #expect(h.upstream.executions("/charges") == 1)

            let echo = try await Self.curl(["--cacert", certificates.caFile, url + "/echo"])
            #expect(echo.output.lowercased().contains("x-forwarded-proto: https"))
            let protected = try await Self.curl(
                ["--cacert", certificates.caFile, "-X", "POST", "-H", "Idempotency-Key: e", "-d", "x", url + "/echo"])
            #expect(protected.output.lowercased().contains("x-forwarded-proto: https"))
            // The admin listener stays plain HTTP.
            #expect(try h.admin("/healthz").status == 200)
            // By name, as the certificate says, too.
            let byName = try await Self.curl(["--cacert", certificates.caFile, "--resolve", "localhost:\(h.port):127.0.0.1", "https://localhost:\(h.port)/echo"])
            #expect(byName.output.hasPrefix("HTTP/1.1 200"))
            // HTTPS only: plain HTTP gets no HTTP answer.
            let plain = try await Self.curl(["http://127.0.0.1:\(h.port)/echo"])
            #expect(!plain.output.hasPrefix("HTTP/1.1 200"))
        }
    }

    @Test func aClientThatStallsInTheHandshakeIsCutOff() async throws {
        let certificates = try TestCertificates()
        try await withProxy(Self.settings(certificates).merging(["client_idle_timeout": "500ms"]) { $1 }) { h in
            let silent = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
            let clock = ContinuousClock()
            let start = clock.now
            #expect(try await blocking { silent.isClosedByPeer() })
            #expect(clock.now - start < .seconds(4))
        }
    }

    /// A TLS 1.1 client (Python's ssl, allowed to offer it) is refused by the server itself.
    @Test func tls11IsRefused() async throws {
        let certificates = try TestCertificates()
        try await withProxy(Self.settings(certificates)) { h in
            let script = """
                import socket, ssl, sys
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.load_verify_locations(sys.argv[2])
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                try:
                    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
                        with ctx.wrap_socket(s, server_hostname="localhost"):
                            print("accepted")
                except ssl.SSLError as e:
                    print("refused: " + str(e))
                """
            let output = try await runToEnd("/usr/bin/python3", ["-c", script, "\(h.port)", certificates.caFile], timeout: 15).stdout
            // The server's alert, not the client's own refusal to offer TLS 1.1.
            #expect(output.contains("refused") && output.lowercased().contains("protocol version"), "\(output)")
        }
    }
}
