import DemoUpstreamKit
import Foundation
import TestSupport
import Testing

/// docs/behaviour.md §4: the proxy as a plain reverse proxy.
@Suite struct PassthroughTests {
    @Test(arguments: ["GET", "POST", "PUT", "DELETE"])
    func methodsPassWithExactBodiesAndStatuses(method: String) async throws {
        try await withProxy { h in
            let r = try await h.send(method, "/echo?q=1", body: method == "GET" ? "" : "payload-\(method)")
            #expect(r.status == 200)
            #expect(r.text.hasPrefix("\(method) /echo?q=1\n"))
            if method != "GET" { #expect(r.text.hasSuffix("\n\npayload-\(method)")) }
            #expect(try await h.send(method, "/status/418").status == 418)
        }
    }

    @Test func threeMebibyteBodiesStreamBothWays() async throws {
        try await withProxy { h in
            let size = 3 * 1_048_576
            let big = String(repeating: "z", count: size)
            let up = try await h.send("PUT", "/echo", body: big)
            #expect(up.status == 200)
            #expect(up.body.count > size)
            #expect(up.text.hasSuffix(String(repeating: "z", count: 100)))
            let down = try await h.send("GET", "/big/\(size)")
            #expect(down.body.count == size)
            let chunkedDown = try await h.send("GET", "/chunked/\(size)")
            #expect(chunkedDown.body.count == size)
        }
    }

    @Test func chunkedRequestBodiesAreForwarded() async throws {
        try await withProxy { h in
            let r = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.sendRequest("PUT", "/echo", headers: [("Transfer-Encoding", "chunked")])
                try c.send("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                return try c.readResponse()
            }
            #expect(r.text.hasSuffix("\n\nhello world"))
            // The same for a protected request: the fingerprint ignores the framing.
            let framed = try await h.send("POST", "/charges", key: "k", body: "hello world")
            let chunked = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.sendRequest("POST", "/charges", headers: [("Idempotency-Key", "k"), ("Transfer-Encoding", "chunked")])
                try c.send("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                return try c.readResponse()
            }
            #expect(chunked.replayed)
            #expect(chunked.body == framed.body)
        }
    }

    @Test func hopByHopHeadersAreStrippedBothWays() async throws {
        try await withProxy { h in
            let r = try await h.send("GET", "/echo", headers: [
                ("Connection", "keep-alive, X-Secret-Hop"), ("X-Secret-Hop", "1"), ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"), ("Proxy-Authorization", "Basic eA=="), ("Upgrade", "h2c"), ("X-End-To-End", "yes"),
            ])
            let seen = h.upstream.snapshot().lastHeaders.map(\.0)
            for hop in ["x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade"] {
                #expect(!seen.contains(hop), "\(hop) reached the upstream")
            }
            #expect(seen.contains("x-end-to-end"))
            #expect(r.header("Connection") == nil || r.header("Connection") == "keep-alive")
        }
    }

    @Test func responseHopByHopHeadersAreStripped() async throws {
        try await withProxy { h in
            for (method, key) in [("GET", nil), ("POST", "hop-1")] as [(String, String?)] {
                let r = try await h.send(method, "/hop", key: key, body: method == "POST" ? "x" : "")
                #expect(r.status == 200)
                for hop in ["X-Hop-Response", "Keep-Alive", "Proxy-Authenticate", "Upgrade"] {
                    #expect(r.header(hop) == nil, "\(hop) reached the client (\(method))")
                }
                #expect(r.header("Connection") == nil)
                #expect(r.header("X-End-To-End") == "kept")
                #expect(r.text == "ok")
            }
            // A chunked response is re-framed for the client, never copied with its framing.
            let chunked = try await h.send("GET", "/chunked/10")
            #expect(chunked.headers("Transfer-Encoding").count <= 1)
            #expect(chunked.body.count == 10)
        }
    }

    @Test func forwardedHeadersAreAppended() async throws {
        try await withProxy { h in
            let r = try await h.send("GET", "/echo", headers: [("X-Forwarded-For", "203.0.113.9")])
            #expect(r.text.contains("X-Forwarded-For: 203.0.113.9, 127.0.0.1"))
            #expect(r.text.contains("X-Forwarded-Proto: http"))
            #expect(r.text.contains("Host: test.local"))
        }
    }

    @Test func twentySequentialRequestsShareOneUpstreamConnection() async throws {
        try await withProxy { h in
            let statuses = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                return try (0..<20).map { _ in try c.request("GET", "/echo").status }
            }
            #expect(statuses == Array(repeating: 200, count: 20))
            #expect(h.upstream.snapshot().connections == 1)
        }
    }

    @Test func unreachableUpstreamGets502Problem() async throws {
        let dead = try ClosedPort()
        try await withProxy(upstreamURL: "http://127.0.0.1:\(dead.port)") { h in
            let r = try await h.send("GET", "/anything")
            #expect(r.status == 502)
            #expect(r.isProblem)
            #expect(try h.metric("upstream_error") == 1)
        }
    }

    @Test func stalledUpstreamGets504WithinTheTimeout() async throws {
        try await withProxy(["upstream_timeout": "300ms", "lock_ttl": "1s"]) { h in
            // The upstream would answer 200 after 3 s; the 504 problem shows the proxy gave up first.
            let r = try await h.send("GET", "/sleep/3000")
            #expect(r.status == 504)
            #expect(r.isProblem)
        }
    }

    @Test(arguments: [
        ("THIS IS NOT HTTP\r\n\r\n", "the request target is not a path"),
        ("GET /echo HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", "control character in a header value"),
        ("GET /echo HTTP/1.1\nHost: x\n\n", "a line does not end with CRLF"),
        ("GET /echo HTTP/3.0\r\nHost: x\r\n\r\n", "not HTTP/1.0 or HTTP/1.1"),
        ("GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", "Content-Length is not a decimal number"),
        ("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "both Content-Length and Transfer-Encoding"),
        ("PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "not just chunked"),
        ("GET /echo HTTP/1.1\r\nBad Header: 1\r\n\r\n", "invalid character in a header name"),
        ("CONNECT api:443 HTTP/1.1\r\nHost: api\r\n\r\n", "the request target is not a path"),
        ("GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"),
    ])
    func malformedRequestsGet400WithAReason(wire: String, reason: String) async throws {
        try await withProxy { h in
            let r = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.send(wire)
                return try c.readResponse()
            }
            #expect(r.status == 400)
            #expect(r.isProblem)
            #expect(r.detail.contains(reason), "\(r.detail)")
        }
    }

    /// RFC 9112 §3.2.2: absolute-form is accepted and goes upstream in origin-form; a retry in
    /// the other form is the same request.
    @Test func absoluteFormTargetsGoUpstreamInOriginForm() async throws {
        try await withProxy { h in
            let r = try await h.send("GET", "http://api.example/echo?q=1")
            #expect(r.text.hasPrefix("GET /echo?q=1\n"))
            let first = try await h.send("POST", "HTTP://api.example/charges", key: "abs", body: "x")
            let retry = try await h.send("POST", "/charges", key: "abs", body: "x")
            #expect(first.status == 201)
            #expect(retry.replayed)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    @Test func badChunkSizeGets400AndStoresNothing() async throws {
        try await withProxy { h in
            let r = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.sendRequest("POST", "/charges", headers: [("Idempotency-Key", "k"), ("Transfer-Encoding", "chunked")])
                try c.send("zz\r\nhello\r\n0\r\n\r\n")
                return try c.readResponse()
            }
            #expect(r.status == 400)
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try await h.recordCount() == 0)
        }
    }

    @Test func bodyShorterThanContentLengthStoresNothing() async throws {
        try await withProxy { h in
            try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.send("POST /charges HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\nContent-Length: 100\r\n\r\nonly-some")
                c.closeNow()
            }
            try await Task.sleep(for: .milliseconds(200))
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try await h.recordCount() == 0)
        }
    }

    @Test func headersOver64KiBGet431() async throws {
        try await withProxy { h in
            let r = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                let headers = (0..<128).map { ("X-Filler-\($0)", String(repeating: "h", count: 1_024)) }
                return try c.request("GET", "/echo", headers: headers)
            }
            #expect(r.status == 431)
            #expect(r.isProblem)
        }
    }

    @Test func connectionStaysOpenAfterA4xx() async throws {
        try await withProxy { h in
            let (first, second) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                let bad = try c.request("POST", "/charges", headers: [("Idempotency-Key", "\"\"")], body: Array("x".utf8))
                let good = try c.request("GET", "/echo")
                return (bad.status, good.status)
            }
            #expect(first == 400)
            #expect(second == 200)
        }
    }

    @Test func basePathOfTheUpstreamIsPrepended() async throws {
        try await withDemoUpstream { upstream in
            try await withProxy(upstream: upstream, upstreamURL: "http://127.0.0.1:\(upstream.port)/echo") { h in
                let r = try await h.send("GET", "/x?y=1")
                #expect(r.text.hasPrefix("GET /echo/x?y=1\n"))
            }
        }
    }
}
