import Crypto

/// The hashes that bind a key to its tenant and its request.
public enum RequestDigest {
    /// SHA-256 over the values of the scope headers, so two clients using the same key never
    /// share a record. Names and values are length-prefixed: no two header sets collide by
    /// concatenation. With no scope headers every request shares one scope.
    public static func scope(headerNames: [String], values: (String) -> [String]) -> [UInt8] {
        var hasher = SHA256()
        for name in headerNames {
            update(&hasher, name.lowercased())
            let all = values(name)
            update(&hasher, String(all.count))
            for value in all { update(&hasher, value) }
        }
        return bytes(of: hasher)
    }

    /// SHA-256 of method, path+query and body: a reused key with another request is refused (422).
    /// The body is hashed as received after de-chunking, so transfer framing does not matter.
    public static func fingerprint(method: String, target: String, body: UnsafeRawBufferPointer) -> [UInt8] {
        var hasher = SHA256()
        update(&hasher, method)
        update(&hasher, target)
        hasher.update(bufferPointer: body)
        return bytes(of: hasher)
    }

    /// The digest in one allocation (an `Array` of the digest as a sequence grows as it goes).
    private static func bytes(of hasher: SHA256) -> [UInt8] {
        hasher.finalize().withUnsafeBytes { Array($0) }
    }

    /// The Redis key of a record: user keys of any bytes never reach Redis raw, and every
    /// record lives in a single hash slot.
    public static func recordKey(prefix: String, scope: [UInt8], key: String) -> String {
        var hasher = SHA256()
        hasher.update(data: scope)
        var key = key
        key.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        return hasher.finalize().withUnsafeBytes { hex($0, after: prefix) }
    }

    /// `prefix` followed by the bytes in lower-case hex, in one allocation.
    public static func hex(_ bytes: UnsafeRawBufferPointer, after prefix: String = "") -> String {
        var prefix = prefix
        return prefix.withUTF8 { start in
            String(unsafeUninitializedCapacity: start.count + bytes.count * 2) { out in
                _ = out.initialize(fromContentsOf: start)
                let digits = UnsafeRawBufferPointer(start: hexDigits.utf8Start, count: 16)
                for (index, byte) in bytes.enumerated() {
                    out[start.count + 2 * index] = digits[Int(byte >> 4)]
                    out[start.count + 2 * index + 1] = digits[Int(byte & 0x0F)]
                }
                return start.count + bytes.count * 2
            }
        }
    }

    private static let hexDigits: StaticString = "0123456789abcdef"

    /// A length-prefixed field, hashed from the string's own bytes.
    private static func update(_ hasher: inout SHA256, _ field: String) {
        var field = field
        field.withUTF8 { bytes in
            var length = UInt32(bytes.count).bigEndian
            withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(bytes))
        }
    }
}
