import NIOCore
import NIOHTTP1

extension ByteBuffer {
    /// `Name: value` CRLF for each header, in order.
    mutating func writeHeaderLines(_ headers: HTTPHeaders) {
        for (name, value) in headers {
            writeString(name)
            writeStaticString(": ")
            writeString(value)
            writeStaticString("\r\n")
        }
    }
}

/// Chunked transfer coding on the way out (RFC 9112 §7.1).
enum ChunkFraming {
    private static let crlf = ByteBuffer(string: "\r\n")
    /// The zero-size chunk and the empty trailer section.
    static let lastChunk = ByteBuffer(string: "0\r\n\r\n")

    /// `body` between its size line and CRLF; the body itself is not copied.
    static func chunk(_ body: ByteBuffer, allocator: ByteBufferAllocator, _ write: (ByteBuffer) -> Void) {
        guard body.readableBytes > 0 else { return }
        var sizeLine = allocator.buffer(capacity: 18)
        sizeLine.writeString(String(body.readableBytes, radix: 16))
        sizeLine.writeStaticString("\r\n")
        write(sizeLine)
        write(body)
        write(crlf)
    }
}
