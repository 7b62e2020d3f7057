/// Parsers for the value syntaxes of the configuration file (docs/behaviour.md §2), each returning the
/// typed value or a message that says what is wrong.
enum ConfigValues {
    /// `250ms`, `30s`, `5m`, `24h`, `30d` → milliseconds.
    static func duration(_ text: String) throws(ConfigValueError) -> Int64 {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            // "5ms" also ends in "s": only accept when the rest is a plain number.
            guard let value = Int64(number), value >= 0, !number.hasPrefix("+") else { continue }
            let (result, overflow) = value.multipliedReportingOverflow(by: scale)
            guard !overflow else { throw ConfigValueError("duration \(text) is too large") }
            return result
        }
        throw ConfigValueError("expected a duration such as 250ms, 30s, 5m, 24h or 30d, got \"\(text)\"")
    }

    static func renderDuration(_ ms: Int64) -> String {
        if ms == 0 { return "0s" }
        // Days from two on (`30d`); a single day reads as the familiar `24h`.
        if ms % 86_400_000 == 0 && ms > 86_400_000 { return "\(ms / 86_400_000)d" }
        // Hours or seconds: `60s` reads better than `1m` for the TTL-sized values used here.
        for (suffix, scale) in [("h", Int64(3_600_000)), ("s", 1_000)] where ms % scale == 0 {
            return "\(ms / scale)\(suffix)"
        }
        return "\(ms)ms"
    }

    /// `512B`, `64KiB`, `1MiB` → bytes.
    static func size(_ text: String) throws(ConfigValueError) -> Int {
        for (suffix, scale) in [("KiB", 1_024), ("MiB", 1_048_576), ("B", 1)] where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard let value = Int(number), value >= 0, !number.hasPrefix("+") else { break }
            let (result, overflow) = value.multipliedReportingOverflow(by: scale)
            guard !overflow, result <= Int(Int32.max) else { throw ConfigValueError("size \(text) is too large") }
            return result
        }
        throw ConfigValueError("expected a size such as 512B, 64KiB or 1MiB, got \"\(text)\"")
    }

    static func renderSize(_ bytes: Int) -> String {
        if bytes > 0, bytes % 1_048_576 == 0 { return "\(bytes / 1_048_576)MiB" }
        if bytes > 0, bytes % 1_024 == 0 { return "\(bytes / 1_024)KiB" }
        return "\(bytes)B"
    }

    static func bool(_ text: String) throws(ConfigValueError) -> Bool {
        switch text {
        case "true": return true
        case "false": return false
        default: throw ConfigValueError("expected true or false, got \"\(text)\"")
        }
    }

    static func integer(_ text: String, min: Int, max: Int) throws(ConfigValueError) -> Int {
        guard let value = Int(text), !text.hasPrefix("+") else {
            throw ConfigValueError("expected a whole number, got \"\(text)\"")
        }
        guard value >= min, value <= max else {
            throw ConfigValueError("\(value) is out of range (\(min) to \(max))")
        }
        return value
    }

    /// Comma-separated, items trimmed, empty items dropped.
    static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { trim(String($0)) }.filter { !$0.isEmpty }
    }

    /// `text` when it is printable ASCII without spaces (empty passes), else `message`.
    static func printableWithoutSpaces(_ text: String, or message: String) throws(ConfigValueError) -> String {
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw ConfigValueError(message) }
        return text
    }

    /// An HTTP token (RFC 9110 §5.6.2): what header names and methods are made of.
    static func token(_ text: String, what: String) throws(ConfigValueError) -> String {
        guard !text.isEmpty, text.utf8.allSatisfy(isTokenByte) else {
            throw ConfigValueError("\"\(text)\" is not a valid \(what)")
        }
        return text
    }

    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// A plain PostgreSQL identifier, lower case so that it names the same table quoted or not.
    static func sqlIdentifier(_ text: String) throws(ConfigValueError) -> String {
        let bytes = Array(text.utf8)
        let valid =
            !bytes.isEmpty && bytes.count <= 63 && !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[0])
            && bytes.allSatisfy {
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || $0 == UInt8(ascii: "_")
            }
        guard valid else {
            throw ConfigValueError("expected a table name of lower-case letters, digits and _ (at most 63, not starting with a digit), got \"\(text)\"")
        }
        return text
    }

    /// `host:port` or `[v6]:port`.
    static func hostPort(_ text: String) throws(ConfigValueError) -> HostPort {
        let host: String
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ConfigValueError("expected [ipv6]:port, got \"\(text)\"")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ConfigValueError("expected host:port, got \"\(text)\"")
            }
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw ConfigValueError("missing host in \"\(text)\"") }
        try validateHost(host, in: text)
        guard let port = Int(portText), (0...65_535).contains(port) else {
            throw ConfigValueError("port in \"\(text)\" must be a number from 0 to 65535")
        }
        return HostPort(host: host, port: port)
    }

    /// A host name, an IPv4 address, or (unbracketed here) an IPv6 address: anything else would
    /// not survive being printed back as a URL, let alone resolve.
    static func validateHost(_ host: String, in text: String) throws(ConfigValueError) {
        let allowed: (UInt8) -> Bool
        if host.contains(":") {
            allowed = { $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") || isHexDigit($0) }
        } else {
            allowed = { isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") }
        }
        guard host.utf8.allSatisfy(allowed) else {
            throw ConfigValueError(
                "invalid host \"\(host)\" in \"\(text)\": expected a name, an IPv4 address or an [IPv6] address")
        }
    }

    static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20)
    }

    static func trim(_ text: String) -> String {
        var s = Substring(text)
        while let first = s.first, first == " " || first == "\t" { s.removeFirst() }
        while let last = s.last, last == " " || last == "\t" || last == "\r" { s.removeLast() }
        return String(s)
    }

    /// Undoes %XX escapes (for passwords in URLs).
    static func percentDecode(_ text: Substring) throws(ConfigValueError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { throw ConfigValueError("bad %-escape in \"\(text)\"") }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// What is wrong with one value; the loader adds where it came from.
public struct ConfigValueError: Error, Equatable {
    public let message: String
    init(_ message: String) { self.message = message }
}

public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
