import HTTPWire
import NIOCore
import NIOHTTP1
import Testing

@Suite struct RequestWriterTests {
    private func wire(chunked: Bool, body: [String]) -> String {
        let writer = RequestWriter(chunked: chunked)
        var buffer = ByteBuffer()
        for part in body {
            writer.body(ByteBuffer(string: part), allocator: ByteBufferAllocator()) { var b = $0; buffer.writeBuffer(&b) }
        }
        if var end = writer.end { buffer.writeBuffer(&end) }
        return String(buffer: buffer)
    }

    @Test func writesFixedLengthBodiesAsTheyAre() {
        #expect(wire(chunked: false, body: ["he", "llo"]) == "hello")
    }

    @Test func chunksWhenTheHeadSaysChunked() {
        #expect(wire(chunked: true, body: ["hello", "", String(repeating: "a", count: 26)])
            == "5\r\nhello\r\n1a\r\n\(String(repeating: "a", count: 26))\r\n0\r\n\r\n")
    }
}

@Suite struct ResponseWriterTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var status: Int
        var headers: [(String, String)]
        var version = HTTPVersion.http1_1
        var toHEAD = false
        var framing: ResponseWriter.Framing
        var wire: String
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "length kept", status: 201, headers: [("Content-Length", "2")], framing: .contentLength,
             wire: "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
        Case(name: "no length, HTTP/1.1: chunked", status: 200, headers: [("X-A", "1")], framing: .chunked,
             wire: "HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
        Case(name: "no length, HTTP/1.0: until close", status: 200, headers: [], version: .http1_0, framing: .untilClose,
             wire: "HTTP/1.0 200 OK\r\n\r\nok"),
        Case(name: "HEAD: head only", status: 200, headers: [("Content-Length", "2")], toHEAD: true, framing: .noBody,
             wire: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
        Case(name: "HEAD without length: no chunk", status: 200, headers: [], toHEAD: true, framing: .noBody,
             wire: "HTTP/1.1 200 OK\r\n\r\n"),
        Case(name: "204", status: 204, headers: [], framing: .noBody, wire: "HTTP/1.1 204 No Content\r\n\r\n"),
        Case(name: "304", status: 304, headers: [("ETag", "\"x\"")], framing: .noBody,
             wire: "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
    ]

    /// Both forms of a head (headers of our own making, an upstream's header lines as bytes)
    /// are framed and written alike.
    @Test(arguments: cases)
    func frames(_ c: Case) {
        let status = HTTPResponseStatus(statusCode: c.status)
        let headers = HTTPHeaders(c.headers)
        let lines = ByteBuffer(string: c.headers.map { "\($0): \($1)\r\n" }.joined())
        let upstream = ResponseHead(
            version: .http1_1, status: status, headerLines: lines, contentLength: headers.first(name: "content-length").flatMap(Int.init))
        for fromUpstream in [false, true] {
            var writer = ResponseWriter()
            let hasLength = headers.contains(name: "content-length")
            #expect(writer.frame(status: status, hasContentLength: hasLength, version: c.version, toHEAD: c.toHEAD) == c.framing)
            var buffer = ByteBuffer()
            if fromUpstream {
                writer.head(upstream, connection: nil, version: c.version, into: &buffer)
            } else {
                writer.head(status: status, headers: headers, version: c.version, into: &buffer)
            }
            writer.body(ByteBuffer(string: "ok"), allocator: ByteBufferAllocator()) { var b = $0; buffer.writeBuffer(&b) }
            if var end = writer.end { buffer.writeBuffer(&end) }
            #expect(String(buffer: buffer) == c.wire, "from upstream: \(fromUpstream)")
        }
    }

    @Test func anUpstreamHeadGetsTheConnectionHeaderItNeeds() {
        let head = ResponseHead(
            version: .http1_1, status: .ok, headerLines: ByteBuffer(string: "X-A: 1\r\n"), contentLength: nil)
        var writer = ResponseWriter()
        writer.frame(status: .ok, hasContentLength: false, version: .http1_0, toHEAD: false)
        var buffer = ByteBuffer()
        writer.head(head, connection: "close", version: .http1_0, into: &buffer)
        #expect(String(buffer: buffer) == "HTTP/1.0 200 OK\r\nX-A: 1\r\nConnection: close\r\n\r\n")
    }
}

@Suite struct ResponseHeadTests {
    @Test func removesHeadersByNameInAnyCase() {
        var head = ResponseHead(
            version: .http1_1, status: .ok,
            headerLines: ByteBuffer(string: "X-A: 1\r\nContent-Length: 5\r\nx-a: 2\r\nEmpty: \r\n"), contentLength: 5)
        #expect(head.headers.map { "\($0.name)=\($0.value)" } == ["X-A=1", "Content-Length=5", "x-a=2", "Empty="])
        head.remove(name: "x-A")
        #expect(String(buffer: head.headerLines) == "Content-Length: 5\r\nEmpty: \r\n")
        #expect(head.contentLength == 5)
        head.remove(name: "content-length")
        #expect(String(buffer: head.headerLines) == "Empty: \r\n")
        #expect(head.contentLength == nil)
    }
}
