import Foundation
import TestSupport
import Testing

/// The proxy frames HTTP/1.1 bytes itself on both sides (`HTTPWire`): pipelined requests,
/// HEAD, HTTP/1.0 clients, and upstream responses framed in every way RFC 9112 allows.
@Suite struct WireFramingTests {
    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withProxy { h in
            let statuses = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                // Three requests in one write: passthrough, protected, passthrough.
                try c.send(
                    "GET /echo?n=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                        + "POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: pipe\r\nContent-Length: 3\r\n\r\nabc"
                        + "GET /status/418 HTTP/1.1\r\nHost: t\r\n\r\n")
                let first = try c.readResponse()
                let second = try c.readResponse(method: "POST")
                let third = try c.readResponse()
                #expect(first.text.hasPrefix("GET /echo?n=1\n"))
                return [first.status, second.status, third.status]
            }
            #expect(statuses == [200, 201, 418])
            #expect(try await h.send("POST", "/charges", key: "pipe", body: "abc").replayed)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    /// A slow client's request arrives in many reads, split anywhere (inside the request line,
    /// a header, a chunk size): the proxy's parser must put it together exactly.
    @Test func aRequestArrivingInPiecesIsReadWhole() async throws {
        try await withProxy { h in
            let wire = Array(
                ("\r\nPOST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: \"trickle\"\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                    + "GET /echo?n=2 HTTP/1.1\r\nHost: t\r\n\r\n").utf8)
            let (first, second) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                for start in stride(from: 0, to: wire.count, by: 7) {
                    try c.send(Array(wire[start..<min(start + 7, wire.count)]))
                    usleep(1_000)
                }
                return (try c.readResponse(method: "POST"), try c.readResponse())
            }
            #expect(first.status == 201)
            #expect(second.text.hasPrefix("GET /echo?n=2\n"))
            let retry = try await h.send("POST", "/charges", key: "trickle", body: "hello world")
            #expect(retry.replayed)
            #expect(retry.text == first.text)
            #expect(h.upstream.executions("/charges") == 1)
        }
    }

    /// An upstream that upper-cases methods would run `post` as POST: it must not slip past
    /// the protection (our demo upstream refuses it; what matters is that the retry is a replay).
    @Test func aLowerCaseMethodIsProtectedLikeItsName() async throws {
        try await withProxy { h in
            let (first, retry) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                let first = try c.request("post", "/charges", headers: [("Idempotency-Key", "lower")], body: Array("a".utf8))
                let d = try RawHTTPClient(port: h.port)
                let retry = try d.request("post", "/charges", headers: [("Idempotency-Key", "lower")], body: Array("a".utf8))
                return (first, retry)
            }
            #expect(first.header("idempotent-replayed") == nil)
            #expect(retry.header("idempotent-replayed") == "true")
            #expect(retry.status == first.status)
        }
    }

    /// A request answered before its body ended (here a bad key) has the rest of its body
    /// skipped; if that rest turns out malformed, the connection closes without a second answer.
    @Test func aMalformedBodyAfterTheAnswerGetsNoSecondAnswer() async throws {
        try await withProxy { h in
            let (first, closed) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: \"\"\r\nTransfer-Encoding: chunked\r\n\r\n")
                let first = try c.readResponse(method: "POST")
                try c.send("zz\r\n")
                return (first, c.isClosedByPeer())
            }
            #expect(first.status == 400)
            #expect(closed)
        }
    }

    @Test func expectContinueIsAnsweredOnlyWhenTheBodyIsWanted() async throws {
        try await withProxy(["max_request_body": "1KiB"]) { h in
            let (interim, final, refused, http10) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: e\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
                let interim = try c.readResponse(interim: true)
                try c.send("ok")
                let final = try c.readResponse()
                // Too large: refused at once, no 100.
                let big = try RawHTTPClient(port: h.port)
                try big.send("POST /charges HTTP/1.1\r\nHost: t\r\nIdempotency-Key: f\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
                let refused = try big.readResponse(interim: true)
                // HTTP/1.0 clients get no 1xx (RFC 9110 §15.2); their body is read anyway.
                let old = try RawHTTPClient(port: h.port)
                try old.send("PUT /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
                let http10 = try old.readResponse(interim: true)
                return (interim.status, final.status, refused.status, http10.status)
            }
            #expect(interim == 100)
            #expect(final == 201)
            #expect(refused == 413)
            #expect(http10 == 200)
        }
    }

    @Test func headResponsesCarryNoBodyAndTheConnectionCarriesOn() async throws {
        try await withProxy { h in
            let (head, next) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                let head = try c.request("HEAD", "/big/1000")
                // A body sent after the HEAD answer would be read as this response.
                return (head, try c.request("GET", "/echo"))
            }
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            #expect(next.status == 200)
            #expect(next.text.hasPrefix("GET /echo\n"))
        }
    }

    @Test func http10ClientsGetKeepAliveOrABodyEndedByTheClose() async throws {
        try await withProxy { h in
            let (first, second) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.send("GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let first = try c.readResponse()
                try c.send("GET /status/204 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                return (first, try c.readResponse())
            }
            #expect(first.rawHead.hasPrefix("HTTP/1.0 200"))
            #expect(first.header("connection") == "keep-alive")
            #expect(second.status == 204)
            // An unsized (chunked upstream) body cannot be chunked for HTTP/1.0: it ends with the connection.
            let (response, closed) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.send("GET /chunked/3000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let response = try c.readResponse()
                return (response, c.isClosedByPeer())
            }
            #expect(response.header("connection") == "close")
            #expect(response.header("transfer-encoding") == nil)
            #expect(response.body.count == 3000)
            #expect(closed)
        }
    }

    @Test func silentClientsAreCutOffButNotWhileTheyWaitOnTheUpstream() async throws {
        try await withProxy(["client_idle_timeout": "300ms"]) { h in
            let (waited, silentClosed, halfSentClosed) = try await blocking {
                // Waiting on a slow upstream for longer than the read timeout is fine.
                let waiting = try RawHTTPClient(port: h.port)
                let waited = try waiting.request("GET", "/sleep/900")
                // Connected and silent; bodies sent only in part, streamed and protected.
                let silent = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                let streamed = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try streamed.send("PUT /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
                let protected = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try protected.send("POST /charges HTTP/1.1\r\nIdempotency-Key: slow\r\nContent-Length: 10\r\n\r\nabc")
                return (waited.status, silent.isClosedByPeer(), [streamed.isClosedByPeer(), protected.isClosedByPeer()])
            }
            #expect(waited == 200)
            #expect(silentClosed)
            #expect(halfSentClosed == [true, true])
        }
    }

    /// A client that sends a line of its head every 100 ms is never silent, but its head has not
    /// arrived whole within client_header_timeout: it is cut off too (slowloris).
    @Test func aHeadTricklingInIsCutOff() async throws {
        try await withProxy(["client_header_timeout": "300ms"]) { h in
            let (closed, linesSent) = try await blocking {
                let c = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
                try c.send("GET /echo HTTP/1.1\r\n")
                var sent = 0
                while sent < 20, (try? c.send("X-\(sent): trickle\r\n")) != nil {
                    sent += 1
                    usleep(100_000)
                }
                return (c.isClosedByPeer(), sent)
            }
            // Without the head deadline all 20 lines go out (2 s), and only then is it silent.
            #expect(closed)
            #expect(linesSent < 20)
        }
    }

    @Test func idleConnectionsCloseWhenShutdownBegins() async throws {
        try await withProxy { h in
            let client = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
            #expect(try await blocking { try client.request("GET", "/echo").status } == 200)
            let stopping = Task { await h.server.shutdown(grace: .seconds(30)) }
            // Closed by the quiesce itself, long before the 30 s grace would close it.
            #expect(try await blocking { client.isClosedByPeer() })
            await stopping.value
        }
    }

    @Test func aRequestInFlightAtShutdownIsAnsweredWithConnectionClose() async throws {
        try await withProxy { h in
            let client = try RawHTTPClient(port: h.port, timeoutSeconds: 5)
            try await blocking { try client.sendRequest("GET", "/sleep/3000") }
            try await h.upstream.waitUntilExecuting("/sleep/3000")
            let stopping = Task { await h.server.shutdown(grace: .seconds(30)) }
            // The listener closes as the quiesce event goes out to the connections.
            let port = h.port
            _ = try await retrying(times: 2_000, pause: .milliseconds(5), while: { $0 }) {
                LoopbackSocket.connect(port: port).map { close($0); return true } ?? false
            }
            let response = try await blocking { try client.readResponse() }
            #expect(response.status == 200)
            #expect(response.header("connection") == "close")
            #expect(try await blocking { client.isClosedByPeer() })
            await stopping.value
        }
    }
}

/// Upstream responses as RFC 9112 §6.3 frames them, from an upstream whose bytes the test writes.
@Suite struct UpstreamFramingTests {
    /// Runs `body` against a proxy in front of a `ScriptedUpstream` answering with `answer`.
    private func withScriptedUpstream(
        _ answer: @escaping @Sendable (String) -> ScriptedUpstream.Answer,
        _ body: (ProxyHarness, ScriptedUpstream) async throws -> Void
    ) async throws {
        let upstream = try ScriptedUpstream(respond: answer)
        defer { upstream.stop() }
        try await withProxy(upstreamURL: "http://127.0.0.1:\(upstream.port)") { h in try await body(h, upstream) }
    }

    @Test func keepAliveResponsesReuseOneConnection() async throws {
        try await withScriptedUpstream({ _ in .init("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") }) { h, upstream in
            let texts = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                return try (0..<3).map { _ in try c.request("GET", "/a").text }
            }
            #expect(texts == ["ok", "ok", "ok"])
            #expect(upstream.connections == 1)
        }
    }

    /// A protected request goes out only on a connection used within the last second (an
    /// upstream closing an idle one under it would cost a kept claim); passthrough requests
    /// reuse connections idle for up to 4 s.
    @Test func protectedRequestsAvoidConnectionsIdleForOverASecond() async throws {
        try await withScriptedUpstream({ _ in .init("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok") }) { h, upstream in
            let counts = try await blocking {
                // One client connection: one event loop, one pool.
                let c = try RawHTTPClient(port: h.port)
                let body = Array("x".utf8)
                _ = try c.request("POST", "/a", headers: [("Idempotency-Key", "p1")], body: body)
                _ = try c.request("POST", "/a", headers: [("Idempotency-Key", "p2")], body: body)
                let hot = upstream.connections
                Thread.sleep(forTimeInterval: 1.3)
                _ = try c.request("GET", "/a")
                let passthrough = upstream.connections
                Thread.sleep(forTimeInterval: 1.3)
                _ = try c.request("POST", "/a", headers: [("Idempotency-Key", "p3")], body: body)
                return [hot, passthrough, upstream.connections]
            }
            #expect(counts == [1, 1, 2])
        }
    }

    @Test func aBodyDelimitedByTheCloseIsForwardedWhole() async throws {
        try await withScriptedUpstream({ _ in .init("HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the close", close: true) }) { h, upstream in
            let responses = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                return try (0..<2).map { _ in try c.request("GET", "/a") }
            }
            for r in responses {
                #expect(r.text == "until the close")
                #expect(r.header("transfer-encoding") == "chunked")
            }
            #expect(upstream.connections == 2)
        }
    }

    @Test func contentLengthBesideTransferEncodingFollowsTheChunksAndRetiresTheConnection() async throws {
        try await withScriptedUpstream({ _ in
            .init("HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        }) { h, upstream in
            let texts = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                return try (0..<2).map { _ in try c.request("GET", "/a").text }
            }
            #expect(texts == ["ok", "ok"])
            #expect(upstream.connections == 2)
        }
    }

    @Test func aHeadAnswerWithChunkedFramingHasNoBody() async throws {
        try await withScriptedUpstream({ request in
            request.hasPrefix("HEAD")
                ? .init("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                : .init("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget")
        }) { h, upstream in
            let (head, get) = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                return (try c.request("HEAD", "/a"), try c.request("GET", "/a"))
            }
            #expect(head.status == 200)
            #expect(get.text == "get")
            #expect(upstream.connections == 1)
        }
    }

    @Test(arguments: [
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx",
        "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
    ])
    func anInvalidResponseGets502(_ wire: String) async throws {
        try await withScriptedUpstream({ _ in .init(wire) }) { h, upstream in
            let r = try await h.send("GET", "/a")
            #expect(r.status == 502)
            #expect(r.isProblem)
        }
    }

    @Test func aBodyThatBreaksAfterTheHeadWentOutCutsTheClientConnection() async throws {
        try await withScriptedUpstream({ _ in
            .init("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nnot-hex\r\n")
        }) { h, upstream in
            // Part of the answer is out: only the cut tells the client it is incomplete.
            await #expect(throws: TestSupportError.self) { _ = try await h.send("GET", "/a") }
        }
    }

    @Test func forwardedRequestsAreFramedForTheUpstream() async throws {
        try await withScriptedUpstream({ _ in .init("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n") }) { h, upstream in
            // No body at all: POST still states its length (RFC 9110 operations).
            _ = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.send("POST /empty HTTP/1.1\r\nHost: t\r\n\r\n")
                return try c.readResponse()
            }
            // A chunked protected request is buffered whole, so it goes on with its length.
            _ = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.sendRequest("POST", "/charges", headers: [("Idempotency-Key", "f"), ("Transfer-Encoding", "chunked")])
                try c.send("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                return try c.readResponse()
            }
            // A chunked unprotected request streams on chunked.
            _ = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.sendRequest("PUT", "/stream", headers: [("Transfer-Encoding", "chunked")])
                try c.send("3\r\nabc\r\n0\r\n\r\n")
                return try c.readResponse()
            }
            // `Connection` may not strip the length of the body being sent: the upstream would
            // read the body as a request of its own.
            let smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
            _ = try await blocking {
                let c = try RawHTTPClient(port: h.port)
                try c.send("PUT /put HTTP/1.1\r\nHost: t\r\nConnection: Content-Length\r\nContent-Length: \(smuggled.utf8.count)\r\n\r\n\(smuggled)")
                return try c.readResponse()
            }
            let requests = upstream.requests
            #expect(!requests.contains { $0.hasPrefix("GET /smuggled") })
            try #require(requests.count == 4)
            #expect(requests[3].contains("\r\nContent-Length: \(smuggled.utf8.count)\r\n"))
            #expect(requests[3].hasSuffix("\r\n\r\n" + smuggled))
            #expect(requests[0].contains("\r\nContent-Length: 0\r\n"))
            #expect(requests[1].contains("\r\nContent-Length: 11\r\n"))
            #expect(!requests[1].lowercased().contains("transfer-encoding"))
            #expect(requests[1].hasSuffix("\r\n\r\nhello world"))
            #expect(requests[2].contains("\r\nTransfer-Encoding: chunked\r\n"))
            #expect(requests[2].hasSuffix("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
        }
    }
}
