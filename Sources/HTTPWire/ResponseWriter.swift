import NIOCore
import NIOHTTP1

/// Serialises responses to the proxy's clients and decides how each body is framed
/// (RFC 9112 §6): a response to HEAD, 1xx, 204 and 304 have none; `Content-Length` is kept as
/// given (the caller sends exactly that many bytes); otherwise HTTP/1.1 clients get a chunked
/// body and HTTP/1.0 clients a body that ends when the connection closes.
public struct ResponseWriter {
    public enum Framing: Equatable, Sendable {
        case noBody
        case contentLength
        case chunked
        /// The caller must close the connection after the body.
        case untilClose
    }

    public private(set) var framing = Framing.contentLength

    public init() {}

    /// `HTTP/1.1 100 Continue`, which needs no framing.
    public static let continueHead = ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n")

    /// Decides how the body of a response to a request of `version` is framed (`toHEAD`: a
    /// HEAD request). Called before `head`, so the caller can still add `Connection: close`.
    @discardableResult
    public mutating func frame(status: HTTPResponseStatus, hasContentLength: Bool, version: HTTPVersion, toHEAD: Bool) -> Framing {
        let code = status.code
        if toHEAD || code < 200 || code == 204 || code == 304 {
            framing = .noBody
        } else if hasContentLength {
            framing = .contentLength
        } else {
            framing = version.minor >= 1 ? .chunked : .untilClose
        }
        return framing
    }

    /// Writes the head as framed. Headers must already be valid (checked where they came from).
    public func head(status: HTTPResponseStatus, headers: HTTPHeaders, version: HTTPVersion, into buffer: inout ByteBuffer) {
        statusLine(status, version: version, into: &buffer)
        buffer.writeHeaderLines(headers)
        endHead(into: &buffer)
    }

    /// Writes an upstream head as framed, its header lines copied as they are, and `Connection:
    /// connection` when given (the lines never carry one: it is hop-by-hop).
    public func head(_ head: ResponseHead, connection: StaticString?, version: HTTPVersion, into buffer: inout ByteBuffer) {
        statusLine(head.status, version: version, into: &buffer)
        buffer.writeImmutableBuffer(head.headerLines)
        if let connection {
            buffer.writeStaticString("Connection: ")
            buffer.writeStaticString(connection)
            buffer.writeStaticString("\r\n")
        }
        endHead(into: &buffer)
    }

    private func statusLine(_ status: HTTPResponseStatus, version: HTTPVersion, into buffer: inout ByteBuffer) {
        buffer.writeStaticString(version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        let code = Int(status.code)
        if (100...999).contains(code) {  // always, from the parser and the record codec
            buffer.writeMultipleIntegers(
                UInt8(48 + code / 100), UInt8(48 + code / 10 % 10), UInt8(48 + code % 10), UInt8(ascii: " "))
        } else {
            buffer.writeString("\(code) ")
        }
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
    }

    private func endHead(into buffer: inout ByteBuffer) {
        if framing == .chunked { buffer.writeStaticString("Transfer-Encoding: chunked\r\n") }
        buffer.writeStaticString("\r\n")
    }

    /// Hands `body` to `write` as it goes on the wire: as is, inside a chunk, or not at all
    /// when the response has no body (the body itself is never copied).
    public func body(_ body: ByteBuffer, allocator: ByteBufferAllocator, _ write: (ByteBuffer) -> Void) {
        guard body.readableBytes > 0 else { return }
        switch framing {
        case .noBody: return
        case .contentLength, .untilClose: write(body)
        case .chunked: ChunkFraming.chunk(body, allocator: allocator, write)
        }
    }

    /// The bytes that end the body: the last chunk of a chunked response, else none.
    public var end: ByteBuffer? { framing == .chunked ? ChunkFraming.lastChunk : nil }
}
