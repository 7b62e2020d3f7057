import HTTPWire
import NIOCore
import NIOHTTP1
import Testing

/// What the parser made of one response, with the body joined.
private struct Parsed: Equatable {
    var status: Int?
    var headers: [String] = []
    var body = ""
    var ended = false
    var keepAlive: Bool?
}

/// Feeds `wire` whole, or one byte at a time (every split point a read can have), then the close.
private func parse(_ wire: String, toHEAD: Bool = false, byteByByte: Bool = false, close: Bool = false) throws -> Parsed {
    var parser = ResponseParser()
    parser.expectResponse(toHEAD: toHEAD)
    var parts: [ResponseParser.Part] = []
    let bytes = Array(wire.utf8)
    if byteByByte {
        for byte in bytes { try parser.feed(ByteBuffer(bytes: [byte]), into: &parts) }
    } else {
        try parser.feed(ByteBuffer(bytes: bytes), into: &parts)
    }
    if close { try parser.connectionClosed(into: &parts) }
    var parsed = Parsed()
    for part in parts {
        switch part {
        case .head(let head):
            parsed.status = Int(head.status.code)
            parsed.headers = head.headers.map { "\($0.name): \($0.value)" }
        case .body(let buffer):
            parsed.body += String(buffer: buffer)
        case .end(let keepAlive):
            parsed.ended = true
            parsed.keepAlive = keepAlive
        }
    }
    return parsed
}

@Suite struct ResponseParserTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var wire: String
        var toHEAD = false
        var close = false
        var status: Int
        var body: String
        var keepAlive: Bool?
        var testDescription: String { name }
    }

    static let accepted: [Case] = [
        Case(name: "content-length", wire: "HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhello",
             status: 201, body: "hello", keepAlive: true),
        Case(name: "zero length", wire: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", status: 200, body: "", keepAlive: true),
        Case(name: "repeated equal lengths", wire: "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
             status: 200, body: "ok", keepAlive: true),
        Case(name: "chunked with extension and trailer",
             wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-T: 1\r\n\r\n",
             status: 200, body: "hello, world!!!", keepAlive: true),
        Case(name: "chunked after gzip", wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
             status: 200, body: "ab", keepAlive: true),
        Case(name: "close-delimited", wire: "HTTP/1.1 200 OK\r\n\r\nuntil the end", close: true,
             status: 200, body: "until the end", keepAlive: false),
        Case(name: "not chunked: until close", wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", close: true,
             status: 200, body: "zz", keepAlive: false),
        Case(name: "TE beats CL, never reused",
             wire: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
             status: 200, body: "a", keepAlive: false),
        Case(name: "HEAD has no body", wire: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", toHEAD: true,
             status: 200, body: "", keepAlive: true),
        Case(name: "204", wire: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, body: "", keepAlive: true),
        Case(name: "304 with length", wire: "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", status: 304, body: "", keepAlive: true),
        Case(name: "100 Continue skipped", wire: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
             status: 200, body: "x", keepAlive: true),
        Case(name: "Connection: close", wire: "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\nx",
             status: 200, body: "x", keepAlive: false),
        Case(name: "HTTP/1.0", wire: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", keepAlive: false),
        Case(name: "HTTP/1.0 keep-alive", wire: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
             status: 200, body: "x", keepAlive: true),
        Case(name: "bare LF lines, no reason", wire: "HTTP/1.1 202\nContent-Length: 1\n\nx", status: 202, body: "x", keepAlive: true),
    ]

    @Test(arguments: accepted)
    func parses(_ c: Case) throws {
        for byteByByte in [false, true] {
            let parsed = try parse(c.wire, toHEAD: c.toHEAD, byteByByte: byteByByte, close: c.close)
            #expect(parsed.status == c.status, "byte by byte: \(byteByByte)")
            #expect(parsed.body == c.body, "byte by byte: \(byteByByte)")
            #expect(parsed.ended, "byte by byte: \(byteByByte)")
            #expect(parsed.keepAlive == c.keepAlive, "byte by byte: \(byteByByte)")
        }
    }

    @Test func dropsContentLengthBesideTransferEncoding() throws {
        let parsed = try parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n0\r\n\r\n")
        #expect(parsed.headers == ["X: 1"])
    }

    /// Heads are handed on end to end: hop-by-hop headers, and those `Connection` names, are
    /// read for framing and dropped.
    @Test func dropsHopByHopHeaders() throws {
        let parsed = try parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                + "Transfer-Encoding: chunked\r\nUpgrade: h2c\r\nX-Kept: 2\r\n\r\n0\r\n\r\n")
        #expect(parsed.headers == ["X-Kept: 2"])
        #expect(parsed.keepAlive == true)
    }

    @Test func keepsHeadersInOrderWithValuesTrimmed() throws {
        let parsed = try parse("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie:b=2\t\r\nContent-Length: 0\r\n\r\n")
        #expect(parsed.headers == ["Set-Cookie: a=1", "set-cookie: b=2", "Content-Length: 0"])
    }

    static let refused: [(String, String)] = [
        ("HTTP/2 200 OK\r\n\r\n", "malformed status line"),
        ("HTTP/1.1 20 OK\r\n\r\n", "malformed status line"),
        ("HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
        ("http/1.1 200 OK\r\n\r\n", "malformed status line"),
        ("HTTP/1.1 099 X\r\n\r\n", "status code below 100"),
        ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "101 Switching Protocols"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "invalid Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "conflicting Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "invalid Content-Length"),
        ("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "obsolete line folding"),
        ("HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "invalid character in a header name"),
        ("HTTP/1.1 200 OK\r\n: nameless\r\n\r\n", "header line without a name"),
        ("HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", "control character in a header value"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", "a chunk size is not a hexadecimal number"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1234567890abcdef0\r\n", "a chunk size is too large"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "chunk data is longer than its size"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\r\n", "a chunk size line does not end with CRLF"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\rb", "chunk data does not end with CRLF"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rx", "the trailer section does not end with CRLF"),
    ]

    @Test(arguments: refused)
    func refuses(_ wire: String, _ reason: String) {
        for byteByByte in [false, true] {
            #expect(byteByByte ? "byte by byte" : "whole") {
                _ = try parse(wire, byteByByte: byteByByte)
            } throws: { error in
                "\(error)".contains(reason)
            }
        }
    }

    /// Bytes behind a complete response (an upstream out of step, or answering requests we
    /// never sent) must keep the connection from being reused.
    @Test func bytesAfterTheResponseRetireTheConnection() throws {
        let parsed = try parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n")
        #expect(parsed.body == "x")
        #expect(parsed.keepAlive == false)
    }

    @Test func refusesBytesWhenNoResponseIsExpected() {
        var parser = ResponseParser()
        var parts: [ResponseParser.Part] = []
        #expect(throws: ResponseParser.ParseError.self) { try parser.feed(ByteBuffer(string: "HTTP/1.1 200 OK\r\n"), into: &parts) }
    }

    @Test func closeInTheMiddleIsAnError() throws {
        for wire in ["", "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"] {
            var parser = ResponseParser()
            parser.expectResponse(toHEAD: false)
            var parts: [ResponseParser.Part] = []
            try parser.feed(ByteBuffer(string: wire), into: &parts)
            #expect(throws: ResponseParser.ParseError.self, "\(wire)") { try parser.connectionClosed(into: &parts) }
        }
    }

    @Test func refusesAnOversizedHead() {
        let wire = "HTTP/1.1 200 OK\r\nX-Big: " + String(repeating: "a", count: ResponseParser.maxHeadBytes) + "\r\n\r\n"
        #expect { _ = try parse(wire) } throws: { "\($0)".contains("response head over") }
        // Also when it arrives in pieces and never ends.
        var parser = ResponseParser()
        parser.expectResponse(toHEAD: false)
        var parts: [ResponseParser.Part] = []
        #expect(throws: ResponseParser.ParseError.self) {
            for _ in 0..<100 { try parser.feed(ByteBuffer(string: String(repeating: "a", count: 1_024)), into: &parts) }
        }
    }

    @Test func carriesOnForTheNextExchange() throws {
        var parser = ResponseParser()
        var parts: [ResponseParser.Part] = []
        for body in ["one", "two"] {
            parser.expectResponse(toHEAD: false)
            try parser.feed(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\(body)"), into: &parts)
            #expect(parser.isIdle)
        }
        #expect(parts.count == 6)
        #expect(parts[4] == .body(ByteBuffer(string: "two")))
    }
}
