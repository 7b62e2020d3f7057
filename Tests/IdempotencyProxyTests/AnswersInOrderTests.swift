import Foundation
import TestSupport
import Testing

/// Bytes that are not HTTP, wherever they sit in a client's stream, are answered in turn (RFC
/// 9112 §9.3.2): every request before them gets its full answer, then the bad bytes get a 400
/// problem, then the connection closes. And nothing of one request's framing (HEAD, HTTP/1.0)
/// leaks into the next answer on the connection.
@Suite struct AnswersInOrderTests {
    struct ValidRequest: Sendable, CustomTestStringConvertible {
        let name: String
        let method: String
        let wire: String
        let status: Int
        /// Executions of /charges the request makes upstream.
        let charges: Int
        var testDescription: String { name }
    }

    static let garbage = "GARBAGE\r\n\r\n"
    static let twoHosts = "GET /stats HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"

    static let validRequests = [
        ValidRequest(name: "GET, passed through", method: "GET", wire: "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n", status: 200, charges: 0),
        ValidRequest(name: "HEAD, passed through", method: "HEAD", wire: "HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n", status: 200, charges: 0),
        ValidRequest(
            name: "POST without a key, passed through", method: "POST",
            wire: "POST /charges HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", status: 201, charges: 1),
        ValidRequest(
            name: "POST with a key, protected", method: "POST",
            wire: "POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: in-order\r\nContent-Length: 3\r\n\r\nabc", status: 201,
            charges: 1),
        ValidRequest(
            name: "chunked POST with a key, protected", method: "POST",
            wire: "POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: in-order\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            status: 201, charges: 1),
    ]

    @Test(arguments: validRequests, [garbage, twoHosts])
    func aValidRequestThenBadBytesInOneWriteGetsBothAnswersInOrder(_ request: ValidRequest, bad: String) async throws {
        try await withProxy { h in
            let (first, second, closed) = try await blocking {
                let c = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try c.send(request.wire + bad)
                let first = try c.readResponse(method: request.method)
                let second = try c.readResponse()
                return (first, second, c.isClosedByPeer())
            }
            #expect(first.status == request.status)
            #expect(!first.isProblem)
            #expect(second.status == 400)
            #expect(second.isProblem)
            #expect(second.header("Connection") == "close")
            #expect(closed)
            #expect(h.upstream.executions("/charges") == request.charges)
            #expect(try h.metric("bad_request") == 1)
        }
    }

    @Test func badBytesBehindTwoPipelinedRequestsWaitForBoth() async throws {
        try await withProxy { h in
            let statuses = try await blocking {
                let c = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try c.send(
                    "POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: p1\r\nContent-Length: 1\r\n\r\nx"
                        + "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n" + Self.garbage + "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n")
                let answers = try (0..<3).map { i in try c.readResponse(method: i == 0 ? "POST" : "GET").status }
                #expect(c.isClosedByPeer(), "nothing after the bad bytes is answered")
                return answers
            }
            #expect(statuses == [201, 200, 400])
        }
    }

    /// The bad bytes are the second request's body: that request gets the 400, nothing of it
    /// runs, and the first still gets its answer.
    @Test func aMalformedBodyOfTheSecondRequestIsItsOwn400() async throws {
        try await withProxy { h in
            let (first, second) = try await blocking {
                let c = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try c.send(
                    "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n"
                        + "POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: bad-body\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                return (try c.readResponse(), try c.readResponse(method: "POST"))
            }
            #expect(first.status == 200)
            #expect(second.status == 400)
            #expect(second.detail.contains("not valid HTTP/1.1"))
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try await h.recordCount() == 0)
        }
    }

    /// A passthrough request whose body turns out malformed is abandoned upstream and answered 400.
    @Test func aMalformedBodyOfAPassthroughRequestIs400() async throws {
        try await withProxy { h in
            let r = try await blocking {
                let c = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try c.send("PUT /things HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nnot-a-size\r\n")
                return try c.readResponse(method: "PUT")
            }
            #expect(r.status == 400)
            #expect(r.isProblem)
        }
    }

    // MARK: - per-request facts

    /// A 400 after a HEAD has a body: it answers a request that is not HEAD.
    @Test func a400AfterAHeadIsFramedWithItsBody() async throws {
        try await withProxy { h in
            let (head, problem) = try await blocking {
                let c = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try c.send("HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n")
                let head = try c.readResponse(method: "HEAD")
                try c.send(Self.garbage)
                return (head, try c.readResponse())
            }
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            #expect(problem.status == 400)
            #expect(problem.body.count == Int(problem.header("Content-Length") ?? ""))
            #expect(problem.text.contains("\"status\":400"))
        }
    }

    /// After an HTTP/1.0 keep-alive request, the 400 for bytes that are no request is an
    /// HTTP/1.1 answer, not one framed for the HTTP/1.0 client before.
    @Test func a400AfterAnHTTP10RequestIsNotFramedForHTTP10() async throws {
        try await withProxy { h in
            let (old, problem) = try await blocking {
                let c = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try c.send("GET /stats HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
                let old = try c.readResponse()
                try c.send(Self.garbage)
                return (old, try c.readResponse())
            }
            #expect(old.header("Connection")?.lowercased() == "keep-alive")
            #expect(problem.status == 400)
            #expect(problem.rawHead.hasPrefix("HTTP/1.1 400"))
            #expect(problem.header("Connection") == "close")
        }
    }

    /// A pipelined second request is counted with its own start, once.
    @Test func everyPipelinedRequestIsCountedOnce() async throws {
        try await withProxy { h in
            try await blocking {
                let c = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try c.send(
                    "HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n" + "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n"
                        + "POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: \"\"\r\nContent-Length: 1\r\n\r\nx"
                        + "GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                for method in ["HEAD", "GET", "POST", "GET"] { _ = try c.readResponse(method: method) }
                #expect(c.isClosedByPeer())
            }
            #expect(try h.metric("passthrough") == 3)
            #expect(try h.metric("bad_request") == 1)
        }
    }
}
