import NIOCore

/// Decodes a chunked body (RFC 9112 §7.1) for both parsers: chunk data is handed on as slices
/// of what was read; chunk extensions and trailers are checked and discarded (a proxy that
/// re-frames a body cannot forward them faithfully, and nothing here needs them).
struct ChunkedDecoder {
    struct Malformed: Error {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// A trailer section this large is refused (the same limit as a head).
    static let maxTrailerBytes = 64 * 1024

    private enum State {
        case size(size: Int, digits: Int)
        /// After the size: extensions or whitespace, skipped up to the line end.
        case sizeExtension(size: Int)
        case sizeLF(size: Int)
        case data(remaining: Int)
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerLine
        case trailerLineLF
        case trailerEndLF
    }

    private var state = State.size(size: 0, digits: 0)
    private var trailerBytes = 0

    /// Consumes bytes of `buffer` and hands on chunk data; returns true once the body (with
    /// its trailers) has ended, leaving the bytes after it in `buffer`.
    mutating func decode(_ buffer: inout ByteBuffer, _ data: (ByteBuffer) -> Void) throws(Malformed) -> Bool {
        while buffer.readableBytes > 0 {
            if case .data(let remaining) = state {
                let (piece, left) = buffer.readBodyPiece(remaining: remaining)
                data(piece)
                state = left == 0 ? .dataCR : .data(remaining: left)
                continue
            }
            if try framingByte(buffer.readInteger(as: UInt8.self)!) { return true }
        }
        return false
    }

    private mutating func framingByte(_ byte: UInt8) throws(Malformed) -> Bool {
        switch state {
        case .size(let size, let digits):
            if let digit = Self.hexValue(byte) {
                guard digits < 15 else { throw Malformed("a chunk size is too large") }
                state = .size(size: size << 4 | digit, digits: digits + 1)
            } else if digits > 0 && (byte == UInt8(ascii: ";") || byte == 32 || byte == 9) {
                state = .sizeExtension(size: size)
            } else if digits > 0 && byte == UInt8(ascii: "\r") {
                state = .sizeLF(size: size)
            } else {
                throw Malformed("a chunk size is not a hexadecimal number")
            }
        case .sizeExtension(let size):
            if byte == UInt8(ascii: "\r") {
                state = .sizeLF(size: size)
            } else if byte < 32 && byte != 9 || byte == 127 {
                throw Malformed("a chunk extension contains a control character")
            }
        case .sizeLF(let size):
            guard byte == UInt8(ascii: "\n") else { throw Malformed("a chunk size line does not end with CRLF") }
            state = size == 0 ? .trailerLineStart : .data(remaining: size)
        case .dataCR:
            guard byte == UInt8(ascii: "\r") else { throw Malformed("chunk data is longer than its size") }
            state = .dataLF
        case .dataLF:
            guard byte == UInt8(ascii: "\n") else { throw Malformed("chunk data does not end with CRLF") }
            state = .size(size: 0, digits: 0)
        case .trailerLineStart:
            if byte == UInt8(ascii: "\n") { throw Malformed("a trailer line does not end with CRLF") }
            state = byte == UInt8(ascii: "\r") ? .trailerEndLF : .trailerLine
        case .trailerLine:
            trailerBytes += 1
            guard trailerBytes <= Self.maxTrailerBytes else { throw Malformed("the trailer section is over 64 KiB") }
            if byte == UInt8(ascii: "\r") {
                state = .trailerLineLF
            } else if byte == UInt8(ascii: "\n") {
                throw Malformed("a trailer line does not end with CRLF")
            }
        case .trailerLineLF:
            guard byte == UInt8(ascii: "\n") else { throw Malformed("a trailer line does not end with CRLF") }
            state = .trailerLineStart
        case .trailerEndLF:
            guard byte == UInt8(ascii: "\n") else { throw Malformed("the trailer section does not end with CRLF") }
            return true
        case .data:
            preconditionFailure("chunk data is sliced, not read by the byte")
        }
        return false
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 48...57: return Int(byte - 48)
        case 65...70: return Int(byte - 55)
        case 97...102: return Int(byte - 87)
        default: return nil
        }
    }
}
