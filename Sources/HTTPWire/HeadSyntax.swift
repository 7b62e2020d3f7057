import NIOCore

/// Byte-level pieces of HTTP/1.1 head syntax (RFC 9110 §5, RFC 9112 §2–5), shared by the
/// parsers. They work on the received bytes in place.
enum HeadSyntax {
    typealias Bytes = Slice<UnsafeRawBufferPointer>

    /// RFC 9110 §5.6.2 `tchar`.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    static func trimmed(_ bytes: Bytes) -> Bytes {
        var bytes = bytes
        while let first = bytes.first, first == 32 || first == 9 { bytes = bytes.dropFirst() }
        while let last = bytes.last, last == 32 || last == 9 { bytes = bytes.dropLast() }
        return bytes
    }

    /// `bytes` equals `lowercase` (lower-case ASCII) ignoring ASCII case.
    static func equalsIgnoringCase(_ bytes: some Collection<UInt8>, _ lowercase: some Collection<UInt8>) -> Bool {
        guard bytes.count == lowercase.count else { return false }
        var other = lowercase.makeIterator()
        for byte in bytes where (byte >= 65 && byte <= 90 ? byte | 0x20 : byte) != other.next() { return false }
        return true
    }

    static func equalsIgnoringCase(_ bytes: Bytes, _ lowercase: StaticString) -> Bool {
        equalsIgnoringCase(bytes, UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount))
    }

    /// The comma-separated elements of a list header, trimmed, empty ones skipped.
    static func listElements(_ value: Bytes) -> [Bytes] {
        value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).map(trimmed).filter { !$0.isEmpty }
    }
}

/// The lines of a head, each without its CRLF (or bare LF).
struct HeadLines: IteratorProtocol {
    private let bytes: UnsafeRawBufferPointer
    private var index = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func next() -> HeadSyntax.Bytes? {
        guard index < bytes.count, let lf = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        var line = bytes[index..<lf]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        index = lf + 1
        return line
    }
}
