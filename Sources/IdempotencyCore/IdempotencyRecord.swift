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

/// The value kept in Redis (and in PostgreSQL's `record` column) for one key.
///
/// Layout (version 2), fixed offsets so the Lua scripts can read the state and owner without
/// decoding:
///
///     byte 0       version (2)
///     byte 1       state: 1 in flight, 2 completed, 3 completed without body (too large),
///                  4 deleted while in flight (`tombstone`, never decoded)
///     bytes 2–17   owner token (unique to the claim, see `OwnerTokens`)
///     bytes 18–49  request fingerprint (SHA-256)
///     completed:   completed-at u64 (ms since the epoch, 0 unknown), status u16, header
///                  count u16, per header: name u16-len + bytes, value u32-len + bytes;
///                  body u32-len + bytes
///     without body: completed-at u64, status u16, the body's length u64 (0 unknown)
///
/// All integers big-endian. Version 1 (idemproxy 0.6) lacks the two lengths and times; it is
/// still read, with both unknown.
public struct IdempotencyRecord: Equatable, Sendable {
    public enum State: Equatable, Sendable {
        case inFlight
        case completed(StoredResponse)
        /// The response was larger than `max_stored_response`: the request ran, but cannot be
        /// replayed. `bodyBytes`: the response body's length (nil in a version 1 record).
        case completedWithoutBody(status: Int, bodyBytes: Int?)
    }

    public static let version: UInt8 = 2
    /// The state byte of a record deleted by the records API while its request was in flight:
    /// the request's own completion finds another owner and stores nothing, and the next claim
    /// takes the key as if nothing were there.
    public static let tombstoneState: UInt8 = 4
    public static let ownerLength = 16
    public static let fingerprintLength = 32

    public var owner: [UInt8]
    public var fingerprint: [UInt8]
    public var state: State
    /// When the request completed, in ms since the epoch (for the records API); nil while in
    /// flight, or when the record does not say.
    public var completedAtMs: Int64?

    public init(owner: [UInt8], fingerprint: [UInt8], state: State, completedAtMs: Int64? = nil) {
        precondition(owner.count == Self.ownerLength && fingerprint.count == Self.fingerprintLength)
        self.owner = owner
        self.fingerprint = fingerprint
        self.state = state
        self.completedAtMs = state == .inFlight ? nil : completedAtMs
    }

    /// A tombstone's bytes: the deleter's owner token, no fingerprint.
    public static func tombstone(owner: [UInt8]) -> [UInt8] {
        [version, tombstoneState] + owner + [UInt8](repeating: 0, count: fingerprintLength)
    }

    /// Why bytes from Redis are not a record (another writer, a future version, truncation).
    public struct Malformed: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public func encoded() -> [UInt8] {
        // An in-flight claim is the same in both versions: written as version 1, a proxy of
        // the previous version still reads it during a rolling upgrade.
        var out: [UInt8] = []
        out.reserveCapacity(encodedCount)
        out.append(state == .inFlight ? 1 : Self.version)
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
            put64(&out, completedAtMs ?? 0)
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
        case .completedWithoutBody(let status, let bodyBytes):
            put64(&out, completedAtMs ?? 0)
            put16(&out, status)
            put64(&out, Int64(bodyBytes ?? 0))
        }
        return out
    }

    /// The length of `encoded()`, so that it is written into one allocation.
    private var encodedCount: Int {
        let header = 2 + Self.ownerLength + Self.fingerprintLength
        switch state {
        case .inFlight:
            return header
        case .completed(let response):
            return response.headers.reduce(header + 8 + 2 + 2 + 4 + response.body.count) { $0 + 6 + $1.name.utf8.count + $1.value.utf8.count }
        case .completedWithoutBody:
            return header + 8 + 2 + 8
        }
    }

    public static func decode(_ bytes: [UInt8]) throws(Malformed) -> IdempotencyRecord {
        try bytes.withUnsafeBytes { bytes in Result { () throws(Malformed) in try decode(bytes) } }.get()
    }

    /// The record in bytes it does not keep (a reply's buffer): what it holds is copied out.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(Malformed) -> IdempotencyRecord {
        var reader = Reader(bytes: bytes)
        let recordVersion = try reader.byte()
        guard recordVersion == 1 || recordVersion == version else {
            throw Malformed(description: "record version \(recordVersion) is not 1 or \(version)")
        }
        let timed = recordVersion >= 2
        let state = try reader.byte()
        let owner = Array(try reader.take(ownerLength))
        let fingerprint = Array(try reader.take(fingerprintLength))
        switch state {
        case 1:
            try reader.expectEnd()
            return IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .inFlight)
        case 2:
            let completedAt = timed ? try reader.time() : nil
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
            return IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .completed(response), completedAtMs: completedAt)
        case 3:
            let completedAt = timed ? try reader.time() : nil
            let status = try reader.status()
            // 0 is unknown: an empty body is never too large.
            let bodyBytes = timed ? Int(try reader.u64()) : 0
            try reader.expectEnd()
            return IdempotencyRecord(
                owner: owner, fingerprint: fingerprint, state: .completedWithoutBody(status: status, bodyBytes: bodyBytes == 0 ? nil : bodyBytes),
                completedAtMs: completedAt)
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
        let bytes: UnsafeRawBufferPointer
        var position = 0

        /// The next `count` bytes, in place (the caller copies what it keeps).
        mutating func take(_ count: Int) throws(Malformed) -> Slice<UnsafeRawBufferPointer> {
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
        mutating func u64() throws(Malformed) -> Int64 {
            let value = try take(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard value <= UInt64(Int64.max) else { throw Malformed(description: "a length or time out of range") }
            return Int64(value)
        }
        /// A completion time; 0 is unknown.
        mutating func time() throws(Malformed) -> Int64? {
            let ms = try u64()
            return ms == 0 ? nil : ms
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

private func put64(_ out: inout [UInt8], _ value: Int64) {
    for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> Int64(shift))) }
}

private func put32(_ out: inout [UInt8], _ value: Int) {
    out.append(UInt8(truncatingIfNeeded: value >> 24))
    out.append(UInt8(truncatingIfNeeded: value >> 16))
    out.append(UInt8(truncatingIfNeeded: value >> 8))
    out.append(UInt8(truncatingIfNeeded: value))
}
