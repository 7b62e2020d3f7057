/// A stored response: what a retry gets back, byte for byte.
public struct StoredResponse: Equatable, Sendable {
    public var status: Int
    /// End-to-end headers in the upstream's order, names as the upstream spelled them.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func == (a: StoredResponse, b: StoredResponse) -> Bool {
        a.status == b.status && a.body == b.body && a.headers.elementsEqual(b.headers, by: { $0 == $1 })
    }
}

/// The value kept in Redis for one key.
///
/// Layout (version 1), fixed offsets so the Lua scripts can read the owner without decoding:
///
///     byte 0       version (1)
///     byte 1       state: 1 in flight, 2 completed, 3 completed without body (too large)
///     bytes 2–17   owner token (unique to the claim, see `OwnerTokens`)
///     bytes 18–49  request fingerprint (SHA-256)
///     completed:   status u16, header count u16, per header: name u16-len + bytes,
///                  value u32-len + bytes; body u32-len + bytes
///     without body: status u16
///
/// All integers big-endian.
public struct IdempotencyRecord: Equatable, Sendable {
    public enum State: Equatable, Sendable {
        case inFlight
        case completed(StoredResponse)
        /// The response was larger than `max_stored_response`: the request ran, but cannot be replayed.
        case completedWithoutBody(status: Int)
    }

    public static let version: UInt8 = 1
    public static let ownerLength = 16
    public static let fingerprintLength = 32

    public var owner: [UInt8]
    public var fingerprint: [UInt8]
    public var state: State

    public init(owner: [UInt8], fingerprint: [UInt8], state: State) {
        precondition(owner.count == Self.ownerLength && fingerprint.count == Self.fingerprintLength)
        self.owner = owner
        self.fingerprint = fingerprint
        self.state = state
    }

    /// Why bytes from Redis are not a record (another writer, a future version, truncation).
    public struct Malformed: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = [Self.version]
        switch state {
        case .inFlight: out.append(1)
        case .completed: out.append(2)
        case .completedWithoutBody: out.append(3)
        }
        out += owner
        out += fingerprint
        switch state {
        case .inFlight:
            break
        case .completed(let response):
            out.reserveCapacity(out.count + response.body.count + 64)
            put16(&out, response.status)
            put16(&out, response.headers.count)
            for (name, value) in response.headers {
                put16(&out, name.utf8.count)
                out += name.utf8
                put32(&out, value.utf8.count)
                out += value.utf8
            }
            put32(&out, response.body.count)
            out += response.body
        case .completedWithoutBody(let status):
            put16(&out, status)
        }
        return out
    }

    public static func decode(_ bytes: [UInt8]) throws(Malformed) -> IdempotencyRecord {
        var reader = Reader(bytes: bytes)
        guard try reader.byte() == version else {
            throw Malformed(description: "record version \(bytes[0]) is not \(version)")
        }
        let state = try reader.byte()
        let owner = Array(try reader.take(ownerLength))
        let fingerprint = Array(try reader.take(fingerprintLength))
        switch state {
        case 1:
            try reader.expectEnd()
            return IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .inFlight)
        case 2:
            let status = try reader.status()
            let count = try reader.u16()
            var headers: [(name: String, value: String)] = []
            headers.reserveCapacity(count)
            for _ in 0..<count {
                let name = try reader.take(reader.u16())
                let value = try reader.take(reader.u32())
                // Replayed as is: a name or value that could break the response framing
                // (another writer, a corrupted record) makes the record unusable.
                guard !name.isEmpty, name.allSatisfy(Self.isTokenByte) else {
                    throw Malformed(description: "header name is not a token")
                }
                guard value.allSatisfy({ $0 >= 32 && $0 != 127 || $0 == 9 }) else {
                    throw Malformed(description: "control character in a header value")
                }
                headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
            }
            let body = Array(try reader.take(reader.u32()))
            try reader.expectEnd()
            let response = StoredResponse(status: status, headers: headers, body: body)
            return IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .completed(response))
        case 3:
            let status = try reader.status()
            try reader.expectEnd()
            return IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .completedWithoutBody(status: status))
        default:
            throw Malformed(description: "unknown record state \(state)")
        }
    }

    /// RFC 9110 §5.6.2 `tchar`.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    private struct Reader {
        let bytes: [UInt8]
        var position = 0

        /// The next `count` bytes, in place (the caller copies what it keeps).
        mutating func take(_ count: Int) throws(Malformed) -> ArraySlice<UInt8> {
            guard count >= 0, bytes.count - position >= count else {
                throw Malformed(description: "record is truncated at byte \(position)")
            }
            defer { position += count }
            return bytes[position..<position + count]
        }
        mutating func byte() throws(Malformed) -> UInt8 { try take(1).first! }
        mutating func u16() throws(Malformed) -> Int {
            try take(2).reduce(0) { $0 << 8 | Int($1) }
        }
        /// A status code as the wire has it: three digits.
        mutating func status() throws(Malformed) -> Int {
            let status = try u16()
            guard (100...999).contains(status) else { throw Malformed(description: "status \(status) is not an HTTP status") }
            return status
        }
        mutating func u32() throws(Malformed) -> Int {
            try take(4).reduce(0) { $0 << 8 | Int($1) }
        }
        func expectEnd() throws(Malformed) {
            guard position == bytes.count else {
                throw Malformed(description: "record has \(bytes.count - position) bytes after its end")
            }
        }
    }
}

private func put16(_ out: inout [UInt8], _ value: Int) {
    out.append(UInt8(truncatingIfNeeded: value >> 8))
    out.append(UInt8(truncatingIfNeeded: value))
}

private func put32(_ out: inout [UInt8], _ value: Int) {
    out.append(UInt8(truncatingIfNeeded: value >> 24))
    out.append(UInt8(truncatingIfNeeded: value >> 16))
    out.append(UInt8(truncatingIfNeeded: value >> 8))
    out.append(UInt8(truncatingIfNeeded: value))
}
