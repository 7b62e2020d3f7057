import NIOCore
import NIOHTTP1

extension ByteBuffer {
    /// `Name: value` CRLF for each header, in order. One reservation and plain copies: four
    /// `writeString` calls per header (each with its own capacity and exclusivity checks) cost
    /// 1.8 µs of a first-time protected request.
    mutating func writeHeaderLines(_ headers: HTTPHeaders) {
        var length = 0
        for (name, value) in headers { length += name.utf8.count + value.utf8.count + 4 }
        writeWithUnsafeMutableBytes(minimumWritableBytes: length) { out in
            var at = 0
            for (name, value) in headers {
                at = Self.copy(name, to: out, at: at)
                out[at] = UInt8(ascii: ":")
                out[at + 1] = UInt8(ascii: " ")
                at = Self.copy(value, to: out, at: at + 2)
                out[at] = UInt8(ascii: "\r")
                out[at + 1] = UInt8(ascii: "\n")
                at += 2
            }
            return at
        }
    }

    /// The next piece of a body of which `remaining` bytes are still due, as a slice of what
    /// was read (not copied), and how many are due after it.
    mutating func readBodyPiece(remaining: Int) -> (piece: ByteBuffer, left: Int) {
        let piece = readSlice(length: Swift.min(remaining, readableBytes))!
        return (piece, remaining - piece.readableBytes)
    }

    private static func copy(_ string: String, to out: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        var string = string
        return string.withUTF8 { bytes in
            UnsafeMutableRawBufferPointer(rebasing: out[offset...]).copyMemory(from: UnsafeRawBufferPointer(bytes))
            return offset + bytes.count
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
