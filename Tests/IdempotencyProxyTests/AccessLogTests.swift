import DemoUpstreamKit
import Foundation
import IdempotencyCore
import TestSupport
import Testing

/// The access log (docs/behaviour.md, "The access log"), as the binary writes it to standard error.
@Suite struct AccessLogTests {
    /// Runs the binary with `access_log = mode`, sends `requests`, stops it and returns its
    /// access log lines, each parsed.
    private func accessLog(
        mode: String?, _ requests: @escaping @Sendable (Int) throws -> Void
    ) async throws -> [[String: String]] {
        var lines: [[String: String]] = []
        try await withDemoUpstream { upstream in
            let port = try FreePort.next()
            var arguments = [
                "--set", "listen=127.0.0.1:\(port)", "--set", "upstream=http://127.0.0.1:\(upstream.port)",
                "--set", "redis_url=\(SharedRedis.url)", "--set", "admin_listen=off",
                "--set", "key_prefix=test:\(UUID().uuidString.prefix(8)):",
            ]
            if let mode { arguments += ["--set", "access_log=\(mode)"] }
            let child = try ChildProcess(ExecutableTests.binary, arguments)
            try FreePort.waitUntilListening(port: port)
            try await blocking { try requests(port) }
            child.signal(SIGTERM)
            #expect(try await blocking { child.wait() } == 0)
            let stderr = child.stderr
            #expect(!stderr.contains("secret-auth-value"), "Authorization is never logged")
            lines = try stderr.split(separator: "\n").filter { $0.contains(" outcome=") }.map { try Logfmt.parse(String($0)) }
        }
        return lines
    }

    private static let authorization = ("Authorization", "Bearer secret-auth-value")

    private static func post(_ port: Int, _ path: String, key: String?, body: String = "x") throws -> RawHTTPClient.Response {
        var headers = [authorization]
        if let key { headers.append(("Idempotency-Key", key)) }
        return try RawHTTPClient(port: port).request("POST", path, headers: headers, body: Array(body.utf8))
    }

    @Test func protectedRequestsAreLoggedWithTheirKeyRecordAndStore() async throws {
        let lines = try await accessLog(mode: nil) { (port: Int) throws in
            // A hostile key: spaces, quotes and = cannot make a field of their own.
            let key = #""a b\" outcome=forged c=d""#
            #expect(try Self.post(port, "/charges?amount=5", key: key).status == 201)
            #expect(try Self.post(port, "/charges?amount=5", key: key).header("Idempotent-Replayed") == "true")
            #expect(try Self.post(port, "/charges", key: nil).status == 201)
            #expect(try Self.post(port, "/charges", key: "").status == 400)
            #expect(try RawHTTPClient(port: port).request("GET", "/stats").status == 200)
        }
        // Each request's line is written when it ends, on its connection's event loop: they
        // are told apart by outcome, not by order.
        #expect(lines.map { $0["outcome"] ?? "" }.sorted() == ["bad_request", "forwarded", "passthrough", "replayed"], "\(lines)")
        func line(_ outcome: String) throws -> [String: String] { try #require(lines.first { $0["outcome"] == outcome }) }
        let (first, replay, keyless, refused) = (try line("forwarded"), try line("replayed"), try line("passthrough"), try line("bad_request"))
        #expect(first["method"] == "POST" && first["path"] == "/charges" && first["status"] == "201")
        #expect(first["outcome"] == "forwarded" && first["route"] == "default")
        #expect(first["key"] == #"a b" outcome=forged c=d"#)
        let scope = RequestDigest.scope(headerNames: ["Authorization"]) { _ in [Self.authorization.1] }
        #expect(first["record"] == RequestDigest.recordKey(prefix: "", scope: scope, key: #"a b" outcome=forged c=d"#))
        #expect(first["store"] == nil && Double(first["upstream_ms"] ?? "") != nil && Double(first["total_ms"] ?? "") != nil)
        #expect(replay["outcome"] == "replayed" && replay["store"] == "redis" && replay["upstream_ms"] == nil)
        #expect(replay["record"] == first["record"] && replay["status"] == "201")
        #expect(keyless["outcome"] == "passthrough" && keyless["key"] == nil && keyless["status"] == "201")
        #expect(refused["outcome"] == "bad_request" && refused["status"] == "400")
    }

    @Test func allLogsEveryRequestAndOffNone() async throws {
        let all = try await accessLog(mode: "all") { port in
            _ = try RawHTTPClient(port: port).request("GET", "/stats?x=1")
            _ = try Self.post(port, "/charges", key: "k")
            let client = try RawHTTPClient(port: port)
            try client.send("NOT HTTP\r\n\r\n")
            #expect(try client.readResponse().status == 400)
        }
        #expect(all.map { $0["status"] ?? "" }.sorted() == ["200", "201", "400"], "\(all)")
        let get = all.first { $0["method"] == "GET" }
        #expect(get?["path"] == "/stats" && get?["outcome"] == "passthrough" && get?["key"] == nil)
        let none = try await accessLog(mode: "off") { port in
            _ = try Self.post(port, "/charges", key: "k")
        }
        #expect(none.isEmpty)
    }
}

/// Reads a logfmt line back: `key=value` or `key="quoted \" value"`.
enum Logfmt {
    static func parse(_ line: String) throws -> [String: String] {
        var fields: [String: String] = [:]
        var rest = Substring(line)
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " }
            guard let equals = rest.firstIndex(of: "=") else { throw TestSupportError("no = in \(rest)") }
            let name = String(rest[..<equals])
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let c = rest.first, c != "\"" {
                    rest = rest.dropFirst()
                    if c == "\\", let escaped = rest.first {
                        rest = rest.dropFirst()
                        value.append(escaped == "n" ? "\n" : escaped == "r" ? "\r" : escaped == "t" ? "\t" : escaped)
                    } else {
                        value.append(c)
                    }
                }
                guard rest.first == "\"" else { throw TestSupportError("unterminated value in \(line)") }
                rest = rest.dropFirst()
            } else {
                value = String(rest.prefix { $0 != " " })
                rest = rest.dropFirst(value.count)
            }
            guard fields[name] == nil else { throw TestSupportError("field \(name) twice in \(line)") }
            fields[name] = value
        }
        return fields
    }
}
