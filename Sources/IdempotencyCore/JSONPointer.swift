/// An RFC 6901 JSON pointer (`/data/event_id`, `~1` for `/` and `~0` for `~` in a name), and a
/// reader that finds the string or integer it points at in a request body (docs/behaviour.md,
/// "Routes": `key_from = json:POINTER`).
///
/// The reader scans the body once, from its start, and stops at the value: it decodes only the
/// member names on the way (in place when they have no escapes) and skips every other value
/// with a counter of open brackets, never by recursion, so a deeply nested body costs no stack.
/// What lies after the value is not read, so a body that is JSON up to the value is accepted.
public struct JSONPointer: Sendable, Equatable, CustomStringConvertible {
    /// The reference tokens, unescaped, as UTF-8.
    public let tokens: [[UInt8]]
    public let description: String

    public init(parsing text: String) throws(ConfigValueError) {
        guard text.isEmpty || text.hasPrefix("/") else {
            throw ConfigValueError("a JSON pointer is empty or starts with /, got \"\(text)\"")
        }
        var tokens: [[UInt8]] = []
        for part in text.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst() {
            var token: [UInt8] = []
            var escaped = false
            for byte in part {
                if escaped {
                    guard byte == UInt8(ascii: "0") || byte == UInt8(ascii: "1") else {
                        throw ConfigValueError("in a JSON pointer ~ is followed by 0 or 1, got \"\(text)\"")
                    }
                    token.append(byte == UInt8(ascii: "0") ? UInt8(ascii: "~") : UInt8(ascii: "/"))
                    escaped = false
                } else if byte == UInt8(ascii: "~") {
                    escaped = true
                } else {
                    token.append(byte)
                }
            }
            guard !escaped else { throw ConfigValueError("a JSON pointer ends with a lone ~, got \"\(text)\"") }
            tokens.append(token)
        }
        self.tokens = tokens
        description = text
    }

    /// The key at the pointer: a string's value, or an integer's decimal text; nil when the
    /// body is not JSON up to there, or holds something else there.
    public func key(in body: UnsafeRawBufferPointer) -> String? {
        var scanner = JSONScanner(bytes: body)
        for token in tokens {
            scanner.skipSpace()
            switch scanner.peek {
            case UInt8(ascii: "{"):
                guard scanner.findMember(token) else { return nil }
            case UInt8(ascii: "["):
                guard let index = Self.arrayIndex(token), scanner.findElement(index) else { return nil }
            default:
                return nil
            }
        }
        scanner.skipSpace()
        guard let first = scanner.peek else { return nil }
        switch first {
        case UInt8(ascii: "\""):
            return scanner.string().map { String(decoding: $0, as: UTF8.self) }
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return scanner.integer()
        default:
            return nil
        }
    }

    /// An array index token: `0`, or digits without a leading zero (RFC 6901 §4).
    private static func arrayIndex(_ token: [UInt8]) -> Int? {
        guard !token.isEmpty, token.count <= 9, token.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            token == [UInt8(ascii: "0")] || token[0] != UInt8(ascii: "0")
        else { return nil }
        return token.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }
}

/// A cursor over JSON bytes; every method leaves it where it stopped and fails by returning
/// nil or false.
private struct JSONScanner {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func skipSpace() {
        while let byte = peek, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { position += 1 }
    }

    mutating func expect(_ byte: UInt8) -> Bool {
        skipSpace()
        guard peek == byte else { return false }
        position += 1
        return true
    }

    /// At `{`: moves to the value of the first member named `name`.
    mutating func findMember(_ name: [UInt8]) -> Bool {
        position += 1
        skipSpace()
        if peek == UInt8(ascii: "}") { return false }
        while true {
            skipSpace()
            guard peek == UInt8(ascii: "\"") else { return false }
            let matches: Bool
            if let raw = rawString() {
                matches = raw.elementsEqual(name)
            } else {
                guard let decoded = string() else { return false }
                matches = decoded == name
            }
            guard expect(UInt8(ascii: ":")) else { return false }
            if matches { return true }
            guard skipValue(), expect(UInt8(ascii: ",")) else { return false }
        }
    }

    /// At `[`: moves to the element at `index`.
    mutating func findElement(_ index: Int) -> Bool {
        position += 1
        skipSpace()
        if peek == UInt8(ascii: "]") { return false }
        for _ in 0..<index {
            guard skipValue(), expect(UInt8(ascii: ",")) else { return false }
        }
        skipSpace()
        return true
    }

    /// At `"`: the string's bytes in place when it has no escapes (the cursor after it);
    /// otherwise nil and the cursor unmoved.
    mutating func rawString() -> UnsafeRawBufferPointer.SubSequence? {
        var end = position + 1
        while end < bytes.count {
            let byte = bytes[end]
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            if byte == UInt8(ascii: "\"") {
                defer { position = end + 1 }
                return bytes[(position + 1)..<end]
            }
            end += 1
        }
        return nil
    }

    /// At `"`: the string's value as UTF-8, escapes decoded (a lone surrogate is refused).
    mutating func string() -> [UInt8]? {
        position += 1
        var out: [UInt8] = []
        while let byte = peek {
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                return out
            case UInt8(ascii: "\\"):
                guard let escape = peek else { return nil }
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard var scalar = hex4() else { return nil }
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard peek == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u") else {
                            return nil
                        }
                        position += 2
                        guard let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { return nil }
                    out.append(contentsOf: UTF8.encode(unicode)!)
                default:
                    return nil
                }
            case 0..<0x20:
                return nil
            default:
                out.append(byte)
            }
        }
        return nil
    }

    private mutating func hex4() -> UInt32? {
        guard position + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    /// At `-` or a digit: an integer's text (`-?(0|[1-9][0-9]*)`), nil for a fraction or an exponent.
    mutating func integer() -> String? {
        let start = position
        if peek == UInt8(ascii: "-") { position += 1 }
        guard let first = peek, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else { return nil }
        position += 1
        if first != UInt8(ascii: "0") {
            while let byte = peek, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") { position += 1 }
        }
        // A fraction or an exponent is not an integer; a digit after a leading 0 is not JSON.
        if let next = peek, next == UInt8(ascii: ".") || next == UInt8(ascii: "e") || next == UInt8(ascii: "E")
            || (next >= UInt8(ascii: "0") && next <= UInt8(ascii: "9"))
        {
            return nil
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    /// Skips one value of any kind, nested ones by counting brackets.
    mutating func skipValue() -> Bool {
        var depth = 0
        repeat {
            skipSpace()
            guard let byte = peek else { return false }
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                position += 1
                continue
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                guard depth > 0 else { return false }
                depth -= 1
                position += 1
            case UInt8(ascii: "\""):
                if rawString() == nil { guard string() != nil else { return false } }
            case UInt8(ascii: ","), UInt8(ascii: ":"):
                guard depth > 0 else { return false }
                position += 1
                continue
            default:
                // A number or a literal: up to the next delimiter.
                let start = position
                while let next = peek, !(next == UInt8(ascii: ",") || next == UInt8(ascii: "}") || next == UInt8(ascii: "]")
                    || next == 0x20 || next == 0x0A || next == 0x0D || next == 0x09 || next == UInt8(ascii: ":")) {
                    position += 1
                }
                guard position > start else { return false }
            }
        } while depth > 0
        return true
    }
}
