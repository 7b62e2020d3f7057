import HTTPWire
import NIOCore
import NIOHTTP1
import Testing

@Suite struct RequestWriterTests {
    private func wire(_ head: HTTPRequestHead, body: [String]) -> String {
        var writer = RequestWriter()
        var buffer = ByteBuffer()
        writer.head(head, into: &buffer)
        for part in body {
            writer.body(ByteBuffer(string: part), allocator: ByteBufferAllocator()) { var b = $0; buffer.writeBuffer(&b) }
        }
        if var end = writer.end { buffer.writeBuffer(&end) }
        return String(buffer: buffer)
    }

    @Test func writesFixedLengthBodiesAsTheyAre() {
        let head = HTTPRequestHead(
            version: .http1_1, method: .POST, uri: "/v1/charges?x=1",
            headers: HTTPHeaders([("Host", "api"), ("Content-Length", "5")]))
        #expect(wire(head, body: ["he", "llo"]) == "POST /v1/charges?x=1 HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\nhello")
    }

    @Test func chunksWhenTheHeadSaysChunked() {
        let head = HTTPRequestHead(version: .http1_1, method: .PUT, uri: "/", headers: HTTPHeaders([("Transfer-Encoding", "chunked")]))
        #expect(wire(head, body: ["hello", "", String(repeating: "a", count: 26)])
            == "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1a\r\n\(String(repeating: "a", count: 26))\r\n0\r\n\r\n")
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

    @Test(arguments: cases)
    func frames(_ c: Case) {
        var writer = ResponseWriter()
        let status = HTTPResponseStatus(statusCode: c.status)
        let headers = HTTPHeaders(c.headers)
        #expect(writer.frame(status: status, headers: headers, version: c.version, toHEAD: c.toHEAD) == c.framing)
        var buffer = ByteBuffer()
        writer.head(status: status, headers: headers, version: c.version, into: &buffer)
        writer.body(ByteBuffer(string: "ok"), allocator: ByteBufferAllocator()) { var b = $0; buffer.writeBuffer(&b) }
        if var end = writer.end { buffer.writeBuffer(&end) }
        #expect(String(buffer: buffer) == c.wire)
    }
}
