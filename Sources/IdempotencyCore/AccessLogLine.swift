/// One access log line in logfmt (docs/behaviour.md, "The access log"), built as bytes without
/// Foundation. A value that is not a plain printable word is quoted, and every byte that could
/// end the line, the quote or the field inside it is escaped, so that a hostile key or path
/// cannot forge a second line or another field.
public struct AccessLogLine {
    public private(set) var bytes: [UInt8] = []

    public init() {
        bytes.reserveCapacity(256)
    }

    // Concrete `String` and `Substring` rather than a generic `StringProtocol`: called from
    // another module, a generic is not specialized, and reading its bytes through protocol
    // witnesses cost about 3 µs a line.
    public mutating func field(_ name: StaticString, _ value: String) { field(name, value[...]) }

    public mutating func field(_ name: StaticString, _ value: Substring) {
        var value = value
        value.withUTF8 { field(name, bytes: $0) }
    }

    private mutating func field(_ name: StaticString, bytes value: UnsafeBufferPointer<UInt8>) {
        start(name)
        guard value.isEmpty || !value.allSatisfy(Self.isPlain) else { return bytes.append(contentsOf: value) }
        bytes.append(UInt8(ascii: "\""))
        for byte in value {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes += [UInt8(ascii: "\\"), byte]
            case UInt8(ascii: "\n"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\r"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case UInt8(ascii: "\t"): bytes += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x20...0x7E: bytes.append(byte)
            default: bytes += [UInt8(ascii: "\\"), UInt8(ascii: "x"), Self.hex[Int(byte >> 4)], Self.hex[Int(byte & 0x0F)]]
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func field(_ name: StaticString, _ value: Int) {
        start(name)
        appendDecimal(UInt64(value.magnitude), negative: value < 0)
    }

    /// A duration in milliseconds with three decimals (microseconds).
    public mutating func milliseconds(_ name: StaticString, nanoseconds: UInt64) {
        start(name)
        let micros = nanoseconds / 1_000
        appendDecimal(micros / 1_000, negative: false)
        bytes.append(UInt8(ascii: "."))
        let fraction = micros % 1_000
        bytes += [UInt8(ascii: "0") + UInt8(fraction / 100), UInt8(ascii: "0") + UInt8(fraction / 10 % 10), UInt8(ascii: "0") + UInt8(fraction % 10)]
    }

    /// The finished line, newline included.
    public mutating func finish() -> [UInt8] {
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    private mutating func start(_ name: StaticString) {
        if !bytes.isEmpty { bytes.append(UInt8(ascii: " ")) }
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "="))
    }

    private mutating func appendDecimal(_ value: UInt64, negative: Bool) {
        if negative { bytes.append(UInt8(ascii: "-")) }
        var count = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            count += 1
        }
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: count))
        rest = value
        for index in stride(from: bytes.count - 1, through: bytes.count - count, by: -1) {
            bytes[index] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
        }
    }

    /// Printable ASCII that needs no quotes: no space, quote, `=` or backslash.
    private static func isPlain(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "=") && byte != UInt8(ascii: "\\")
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)
}
