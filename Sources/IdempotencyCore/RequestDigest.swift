import Crypto

/// The hashes that bind a key to its tenant and its request.
public enum RequestDigest {
    /// SHA-256 over the values of the scope headers, so two clients using the same key never
    /// share a record. Names and values are length-prefixed: no two header sets collide by
    /// concatenation. With no scope headers every request shares one scope.
    public static func scope(headerNames: [String], values: (String) -> [String]) -> [UInt8] {
        var hasher = SHA256()
        for name in headerNames {
            update(&hasher, Array(name.lowercased().utf8))
            let all = values(name)
            update(&hasher, Array(String(all.count).utf8))
            for value in all { update(&hasher, Array(value.utf8)) }
        }
        return Array(hasher.finalize())
    }

    /// SHA-256 of method, path+query and body: a reused key with another request is refused (422).
    /// The body is hashed as received after de-chunking, so transfer framing does not matter.
    public static func fingerprint(method: String, target: String, body: UnsafeRawBufferPointer) -> [UInt8] {
        var hasher = SHA256()
        update(&hasher, Array(method.utf8))
        update(&hasher, Array(target.utf8))
        hasher.update(bufferPointer: body)
        return Array(hasher.finalize())
    }

    /// The Redis key of a record: user keys of any bytes never reach Redis raw, and every
    /// record lives in a single hash slot.
    public static func recordKey(prefix: String, scope: [UInt8], key: String) -> String {
        var hasher = SHA256()
        hasher.update(data: scope)
        hasher.update(data: Array(key.utf8))
        return prefix + hex(Array(hasher.finalize()))
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func update(_ hasher: inout SHA256, _ field: [UInt8]) {
        var length = UInt32(field.count).bigEndian
        withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
        hasher.update(data: field)
    }
}
