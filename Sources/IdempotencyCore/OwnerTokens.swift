/// Owner tokens for the claims made on one event loop (record bytes 2–17). A token only has to
/// differ from every other claim's: a random 8-byte prefix drawn once per generator and an
/// 8-byte counter do that without two `getrandom` system calls per request (about 1% of a
/// first-time request's CPU).
public struct OwnerTokens {
    private let prefix: UInt64
    private var counter: UInt64 = 0

    public init(prefix: UInt64 = .random(in: .min ... .max)) {
        self.prefix = prefix
    }

    public mutating func next() -> [UInt8] {
        counter &+= 1
        var token = [UInt8]()
        token.reserveCapacity(IdempotencyRecord.ownerLength)
        withUnsafeBytes(of: prefix.bigEndian) { token += $0 }
        withUnsafeBytes(of: counter.bigEndian) { token += $0 }
        return token
    }
}
