/// Where Redis Cluster keeps a key: one of 16384 hash slots, from CRC16 (XMODEM) of the key,
/// or of its hash tag, the part between the first `{` and the next `}` when that is not empty
/// (Redis Cluster specification, "Keys distribution model").
public enum HashSlot {
    public static let count = 16384

    public static func of(_ key: some Collection<UInt8>) -> Int {
        if let open = key.firstIndex(of: UInt8(ascii: "{")) {
            let afterOpen = key.index(after: open)
            if let close = key[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close != afterOpen {
                return Int(crc16(key[afterOpen..<close]) % UInt16(count))
            }
        }
        return Int(crc16(key) % UInt16(count))
    }

    static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes { crc = (crc << 8) ^ table[Int((crc >> 8) ^ UInt16(byte))] }
        return crc
    }

    /// CRC16-CCITT (XMODEM), polynomial 0x1021, one entry per byte value.
    private static let table: [UInt16] = (0..<256).map { value in
        var crc = UInt16(value) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}

extension RedisArgument {
    /// The slot of this argument used as a key.
    var hashSlot: Int {
        switch self {
        case .string(let text): return HashSlot.of(text.utf8)
        case .bytes(let bytes): return HashSlot.of(bytes)
        case .buffer(let buffer): return HashSlot.of(buffer.readableBytesView)
        }
    }
}
