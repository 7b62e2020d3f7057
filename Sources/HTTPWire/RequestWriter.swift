import NIOCore
import NIOHTTP1

/// Serialises a request for the proxy's upstream connections, exactly as framed by its head:
/// `Transfer-Encoding: chunked` → the body is chunked here; otherwise it is written as is
/// (`Content-Length`, or no body). Headers were validated on the way in, so none are re-checked.
public struct RequestWriter {
    private var chunked = false

    public init() {}

    public mutating func head(_ head: HTTPRequestHead, into buffer: inout ByteBuffer) {
        chunked = HopByHopHeaders.isChunked(head.headers)
        buffer.writeString(head.method.rawValue)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(head.uri)
        buffer.writeStaticString(head.version.minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
        buffer.writeHeaderLines(head.headers)
        buffer.writeStaticString("\r\n")
    }

    /// Hands `body` to `write` as it goes on the wire: as is, or inside a chunk when the
    /// request is chunked (the body itself is never copied).
    public func body(_ body: ByteBuffer, allocator: ByteBufferAllocator, _ write: (ByteBuffer) -> Void) {
        if chunked { ChunkFraming.chunk(body, allocator: allocator, write) } else { write(body) }
    }

    /// The bytes that end the body: the last chunk of a chunked request, else none.
    public var end: ByteBuffer? { chunked ? ChunkFraming.lastChunk : nil }
}
