import NIOCore
import NIOHTTP1
import Testing

@testable import HTTPWire

/// What the parser made of a byte stream, in a form tests can compare.
struct ParsedRequests: Equatable {
    struct Request: Equatable {
        var line: String
        var headerLines: String
        var framing: RequestHead.Framing
        var keepAlive: Bool
        var expectsContinue: Bool
        var namedByConnection: [String]
        var body = ""
        var ended = false
    }
    var requests: [Request] = []

    /// Feeds `wire` whole, or one byte per read (every split must give the same result).
    static func parse(_ wire: String, byteByByte: Bool = false) throws(RequestParser.ParseError) -> ParsedRequests {
        var parser = RequestParser()
        var parsed = ParsedRequests()
        let bytes = Array(wire.utf8)
        let reads = byteByByte ? bytes.map { [$0] } : [bytes]
        for read in reads {
            try parser.feed(ByteBuffer(bytes: read)) { part in
                switch part {
                case .head(let head):
                    parsed.requests.append(
                        Request(
                            line: "\(head.method.rawValue) \(head.target) HTTP/1.\(head.version.minor)",
                            headerLines: String(buffer: head.headerLines), framing: head.framing,
                            keepAlive: head.keepAlive, expectsContinue: head.expectsContinue,
                            namedByConnection: head.namedByConnection))
                case .body(let body):
                    parsed.requests[parsed.requests.count - 1].body += String(buffer: body)
                case .end:
                    parsed.requests[parsed.requests.count - 1].ended = true
                }
            }
        }
        return parsed
    }
}

@Suite struct RequestParserTests {
    typealias Request = ParsedRequests.Request

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var wire: String
        var expected: [Request]
        var testDescription: String { name }
    }

    static let accepted: [Case] = [
        Case(name: "GET, no body", wire: "GET /a?b=1 HTTP/1.1\r\nHost: api\r\nAccept: */*\r\n\r\n",
             expected: [Request(line: "GET /a?b=1 HTTP/1.1", headerLines: "Host: api\r\nAccept: */*\r\n", framing: .none,
                                keepAlive: true, expectsContinue: false, namedByConnection: [], ended: true)]),
        Case(name: "no headers at all", wire: "GET / HTTP/1.1\r\n\r\n",
             expected: [Request(line: "GET / HTTP/1.1", headerLines: "", framing: .none, keepAlive: true,
                                expectsContinue: false, namedByConnection: [], ended: true)]),
        Case(name: "Content-Length body", wire: "POST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
             expected: [Request(line: "POST /c HTTP/1.1", headerLines: "Content-Length: 5\r\n", framing: .length(5),
                                keepAlive: true, expectsContinue: false, namedByConnection: [], body: "hello", ended: true)]),
        Case(name: "equal Content-Length values are one length",
             wire: "POST /c HTTP/1.1\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
             expected: [Request(line: "POST /c HTTP/1.1", headerLines: "Content-Length: 2, 2\r\ncontent-length: 2\r\n",
                                framing: .length(2), keepAlive: true, expectsContinue: false, namedByConnection: [],
                                body: "ok", ended: true)]),
        Case(name: "chunked with extension and trailer",
             wire: "PUT /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-T: 1\r\n\r\n",
             expected: [Request(line: "PUT /c HTTP/1.1", headerLines: "Transfer-Encoding: Chunked\r\n", framing: .chunked,
                                keepAlive: true, expectsContinue: false, namedByConnection: [],
                                body: "hello, world!!!", ended: true)]),
        Case(name: "pipelined requests, each whole",
             wire: "POST /1 HTTP/1.1\r\nContent-Length: 1\r\n\r\naGET /2 HTTP/1.1\r\n\r\n",
             expected: [
                Request(line: "POST /1 HTTP/1.1", headerLines: "Content-Length: 1\r\n", framing: .length(1), keepAlive: true,
                        expectsContinue: false, namedByConnection: [], body: "a", ended: true),
                Request(line: "GET /2 HTTP/1.1", headerLines: "", framing: .none, keepAlive: true, expectsContinue: false,
                        namedByConnection: [], ended: true),
             ]),
        Case(name: "empty lines before a request are skipped",
             wire: "\r\n\r\nGET / HTTP/1.1\r\n\r\n",
             expected: [Request(line: "GET / HTTP/1.1", headerLines: "", framing: .none, keepAlive: true,
                                expectsContinue: false, namedByConnection: [], ended: true)]),
        Case(name: "Connection: close ends the stream; later bytes are not requests",
             wire: "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
             expected: [Request(line: "GET / HTTP/1.1", headerLines: "Connection: close\r\n", framing: .none,
                                keepAlive: false, expectsContinue: false, namedByConnection: [], ended: true)]),
        Case(name: "HTTP/1.0 closes unless told keep-alive",
             wire: "GET / HTTP/1.0\r\n\r\n",
             expected: [Request(line: "GET / HTTP/1.0", headerLines: "", framing: .none, keepAlive: false,
                                expectsContinue: false, namedByConnection: [], ended: true)]),
        Case(name: "HTTP/1.0 keep-alive",
             wire: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
             expected: [Request(line: "GET / HTTP/1.0", headerLines: "Connection: Keep-Alive\r\n", framing: .none,
                                keepAlive: true, expectsContinue: false, namedByConnection: [], ended: true)]),
        Case(name: "headers Connection names, lower-cased; its own tokens are not headers",
             wire: "GET / HTTP/1.1\r\nConnection: keep-alive, X-Private,, Content-Length\r\nConnection: x-b\r\n\r\n",
             expected: [Request(line: "GET / HTTP/1.1",
                                headerLines: "Connection: keep-alive, X-Private,, Content-Length\r\nConnection: x-b\r\n",
                                framing: .none, keepAlive: true, expectsContinue: false,
                                namedByConnection: ["x-private", "content-length", "x-b"], ended: true)]),
        Case(name: "Expect: 100-continue",
             wire: "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n",
             expected: [Request(line: "POST / HTTP/1.1", headerLines: "Expect: 100-Continue\r\nContent-Length: 0\r\n",
                                framing: .length(0), keepAlive: true, expectsContinue: true, namedByConnection: [],
                                ended: true)]),
        Case(name: "whitespace around values, obs-text and an empty value are allowed",
             wire: "GET /%C3%A9 HTTP/1.1\r\nX-A: \t a b \t\r\nX-B: caf\u{e9}\r\nX-C:\r\n\r\n",
             expected: [Request(line: "GET /%C3%A9 HTTP/1.1", headerLines: "X-A: \t a b \t\r\nX-B: caf\u{e9}\r\nX-C:\r\n",
                                framing: .none, keepAlive: true, expectsContinue: false, namedByConnection: [],
                                ended: true)]),
        Case(name: "an unknown method is a token like any other",
             wire: "PURGE /x HTTP/1.1\r\n\r\n",
             expected: [Request(line: "PURGE /x HTTP/1.1", headerLines: "", framing: .none, keepAlive: true,
                                expectsContinue: false, namedByConnection: [], ended: true)]),
        Case(name: "OPTIONS * and an absolute-form target", wire: "OPTIONS * HTTP/1.1\r\n\r\nGET HTTP://h:1/a?b HTTP/1.1\r\n\r\n",
             expected: [
                Request(line: "OPTIONS * HTTP/1.1", headerLines: "", framing: .none, keepAlive: true, expectsContinue: false,
                        namedByConnection: [], ended: true),
                Request(line: "GET HTTP://h:1/a?b HTTP/1.1", headerLines: "", framing: .none, keepAlive: true,
                        expectsContinue: false, namedByConnection: [], ended: true),
             ]),
        Case(name: "a head still coming yields nothing yet", wire: "POST / HTTP/1.1\r\nContent-Le", expected: []),
        Case(name: "a body still coming is handed on so far",
             wire: "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc",
             expected: [Request(line: "POST / HTTP/1.1", headerLines: "Content-Length: 9\r\n", framing: .length(9),
                                keepAlive: true, expectsContinue: false, namedByConnection: [], body: "abc")]),
    ]

    @Test(arguments: accepted)
    func parses(_ c: Case) throws {
        #expect(try ParsedRequests.parse(c.wire).requests == c.expected)
        #expect(try ParsedRequests.parse(c.wire, byteByByte: true).requests == c.expected)
    }

    /// Each row is a request another server could frame differently, or that is not HTTP/1.1.
    static let refused: [(String, String)] = [
        ("GET / HTTP/1.1\n\n", "a line does not end with CRLF"),
        ("GET / HTTP/1.1\r\nX-A: 1\n\r\n", "a line does not end with CRLF"),
        ("GET  / HTTP/1.1\r\n\r\n", "not `method target version`"),
        ("GET /\r\n\r\n", "not `method target version`"),
        ("GET / HTTP/1.1 \r\n\r\n", "protocol version"),
        ("GET / HTTP/2.0\r\n\r\n", "protocol version"),
        ("GET / http/1.1\r\n\r\n", "protocol version"),
        ("G(T / HTTP/1.1\r\n\r\n", "the method is not a token"),
        ("GET /a\u{1}b HTTP/1.1\r\n\r\n", "request target contains"),
        ("GET /caf\u{e9} HTTP/1.1\r\n\r\n", "request target contains"),
        ("CONNECT api:443 HTTP/1.1\r\n\r\n", "the request target is not a path"),
        ("GET charges HTTP/1.1\r\n\r\n", "the request target is not a path"),
        ("GET * HTTP/1.1\r\n\r\n", "the request target is not a path"),
        ("GET ftp://h/x HTTP/1.1\r\n\r\n", "the request target is not a path"),
        ("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", "more than one Host"),
        ("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", "obsolete line folding"),
        ("GET / HTTP/1.1\r\nX-A : 1\r\n\r\n", "invalid character in a header name"),
        ("GET / HTTP/1.1\r\n: nameless\r\n\r\n", "header line without a name"),
        ("GET / HTTP/1.1\r\nNo colon\r\n\r\n", "header line without a name"),
        ("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", "control character in a header value"),
        ("GET / HTTP/1.1\r\nX-A: a\u{0}b\r\n\r\n", "control character in a header value"),
        ("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", "Content-Length is not a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", "Content-Length is not a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", "Content-Length is not a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", "Content-Length is not a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: 1,\r\n\r\n", "Content-Length is not a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: 1, ,1\r\n\r\n", "Content-Length is not a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: ,1\r\n\r\n", "Content-Length is not a decimal number"),
        ("POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", "Content-Length has conflicting values"),
        ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length has conflicting values"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "both Content-Length and Transfer-Encoding"),
        ("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "not just chunked"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "not just chunked"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "not just chunked"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, \r\n\r\n", "not just chunked"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", "not just chunked"),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "not allowed in HTTP/1.0"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n", "a chunk size is not a hexadecimal number"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "a chunk size is not a hexadecimal number"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1234567890abcdef0\r\n", "a chunk size is too large"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "chunk data is longer than its size"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\r\n", "a chunk size line does not end with CRLF"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\u{1}\r\nx\r\n", "a chunk extension contains a control character"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\rb", "chunk data does not end with CRLF"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n", "a trailer line does not end with CRLF"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rx", "the trailer section does not end with CRLF"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n", "a trailer line does not end with CRLF"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\rY\r\n\r\n", "a trailer line does not end with CRLF"),
        ("GET / HTTP/1.1\r\n\r\nBAD\n", "a line does not end with CRLF"),
    ]

    @Test(arguments: refused)
    func refuses(_ wire: String, _ reason: String) {
        for byteByByte in [false, true] {
            #expect(byteByByte ? "byte by byte" : "whole") {
                _ = try ParsedRequests.parse(wire, byteByByte: byteByByte)
            } throws: { error in
                let error = error as! RequestParser.ParseError
                return error.description.contains(reason) && !error.headTooLarge
            }
        }
    }

    /// docs/behaviour.md §4: a head over 64 KiB gets 431, whether it arrives at once or trickles in (the
    /// parser must not keep collecting an endless head).
    @Test func refusesHeadsOver64KiB() throws {
        let header = "X-Filler: " + String(repeating: "a", count: 1_000) + "\r\n"
        let justFits = "GET / HTTP/1.1\r\n" + String(repeating: header, count: 64) + "\r\n"
        #expect(justFits.utf8.count < RequestParser.maxHeadBytes)
        #expect(try ParsedRequests.parse(justFits).requests.count == 1)
        let tooLarge = "GET / HTTP/1.1\r\n" + String(repeating: header, count: 66) + "\r\n"
        let unending = "GET / HTTP/1.1\r\n" + String(repeating: header, count: 70)
        for wire in [tooLarge, unending] {
            #expect(throws: RequestParser.ParseError.self) { _ = try ParsedRequests.parse(wire) }
            do {
                var parser = RequestParser()
                // In pieces of 1 KiB, as a slow client would send it.
                for piece in Array(wire.utf8).chunks(of: 1_024) { try parser.feed(ByteBuffer(bytes: piece)) { _ in } }
                Issue.record("a head over 64 KiB was accepted")
            } catch {
                #expect(error.headTooLarge)
            }
        }
    }

    /// After a refusal the byte stream cannot be trusted: nothing more is read from it (and
    /// the proxy does not answer twice).
    @Test func readsNothingAfterARefusal() throws {
        var parser = RequestParser()
        var parts = 0
        #expect(throws: RequestParser.ParseError.self) {
            try parser.feed(ByteBuffer(string: "GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n")) { _ in parts += 1 }
        }
        try parser.feed(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n")) { _ in parts += 1 }
        #expect(parts == 0)
    }

    /// A protected request's head is kept while Redis and the upstream answer: detached, it no
    /// longer holds on to the whole read buffer.
    @Test func aDetachedHeadHoldsOnlyItsLines() throws {
        var read = ByteBufferAllocator().buffer(capacity: 16_384)
        read.writeString("POST / HTTP/1.1\r\nIdempotency-Key: k\r\n\r\n")
        var detached = try RequestHead.parsed(from: read)
        #expect(detached.headerLines.storageCapacity >= 16_384)
        detached.detach()
        #expect(detached.headerLines.storageCapacity < 1_024)
        #expect(String(buffer: detached.headerLines) == "Idempotency-Key: k\r\n")
        #expect(detached.values(named: "idempotency-key") == ["k"])
    }

    /// The header lines handed on are a slice of what was read: a header looked up by name is
    /// found whatever its case, with its value trimmed.
    @Test func looksUpHeaderValuesByName() throws {
        let head = try RequestHead.parsed(
            from: ByteBuffer(string: "POST / HTTP/1.1\r\nIdempotency-Key: \"a\" \r\nX: 1\r\nidempotency-key:b\r\n\r\n"))
        #expect(head.values(named: "IDEMPOTENCY-KEY") == ["\"a\"", "b"])
        #expect(head.values(named: "Authorization") == [])
    }
}

extension RequestHead {
    /// The head of the first request in `read`, parsed as the proxy parses it.
    static func parsed(from read: ByteBuffer) throws -> RequestHead {
        var parser = RequestParser()
        var head: RequestHead?
        try parser.feed(read) { if case .head(let parsed) = $0 { head = parsed } }
        return try #require(head)
    }
}

extension Array {
    func chunks(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
