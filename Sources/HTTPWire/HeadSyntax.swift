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
        var elements: [Bytes] = []
        forEachElement(of: value) { elements.append($0) }
        return elements
    }

    /// `listElements` without building the list (headers read on every request).
    static func forEachElement(of value: Bytes, _ body: (Bytes) -> Void) {
        var rest = value
        while !rest.isEmpty {
            let comma = rest.firstIndex(of: UInt8(ascii: ",")) ?? rest.endIndex
            let element = trimmed(rest[..<comma])
            if !element.isEmpty { body(element) }
            rest = comma == rest.endIndex ? rest[comma...] : rest[(comma + 1)...]
        }
    }

    struct MalformedField: Error {
        let description: String
    }

    /// The name and trimmed value of a header line (RFC 9112 §5), checked as both parsers need:
    /// no line folding, a token for a name right before the colon, no control characters.
    static func field(_ line: Bytes) throws(MalformedField) -> (name: Bytes, value: Bytes) {
        if line.first == UInt8(ascii: " ") || line.first == UInt8(ascii: "\t") {
            throw MalformedField(description: "obsolete line folding in a header")
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else {
            throw MalformedField(description: "header line without a name")
        }
        let name = line[..<colon]
        guard name.allSatisfy(isTokenByte) else { throw MalformedField(description: "invalid character in a header name") }
        let value = trimmed(line[(colon + 1)...])
        guard isFieldValue(value) else { throw MalformedField(description: "control character in a header value") }
        return (name, value)
    }

    /// A header value holds no control character but HTAB.
    static func isFieldValue(_ value: Bytes) -> Bool {
        value.allSatisfy { $0 >= 32 && $0 != 127 || $0 == 9 }
    }

    enum ContentLengthError: Error {
        case invalid
        case conflicting
    }

    /// Adds a `Content-Length` value to what earlier ones said: `5, 5` and repeated equal
    /// headers are one length (RFC 9110 operations); any other list is not.
    static func noteContentLength(_ value: Bytes, into length: inout Int?) throws(ContentLengthError) {
        var rest = value
        while true {
            let comma = rest.firstIndex(of: UInt8(ascii: ",")) ?? rest.endIndex
            let digits = trimmed(rest[..<comma])
            guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw .invalid
            }
            let value = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
            guard length == nil || length == value else { throw .conflicting }
            length = value
            if comma == rest.endIndex { return }
            rest = rest[(comma + 1)...]
        }
    }

    /// What a `Connection` value says: `close`, `keep-alive`, and the other headers it names
    /// as hop-by-hop (lower-cased).
    static func noteConnection(_ value: Bytes, close: inout Bool, keepAlive: inout Bool, named: inout [String]) {
        forEachElement(of: value) { token in
            if equalsIgnoringCase(token, "close") {
                close = true
            } else if equalsIgnoringCase(token, "keep-alive") {
                keepAlive = true
            } else {
                named.append(String(decoding: UnsafeRawBufferPointer(rebasing: token), as: UTF8.self).lowercased())
            }
        }
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
