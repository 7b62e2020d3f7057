import Crypto

/// The records API's credential (docs/behaviour.md, "The records API"): `Authorization: Bearer
/// <admin_token>`. The SHA-256 digests are compared, every byte, so that the time taken says
/// nothing of how much of a guess was right, nor of the token's length.
public struct AdminToken: Sendable {
    private let digest: [UInt8]

    public init(_ token: String) {
        digest = Array(SHA256.hash(data: Array(token.utf8)))
    }

    /// One `Authorization` header whose credentials are the token (the scheme's name in any case).
    public func admits(authorization values: [String]) -> Bool {
        guard values.count == 1 else { return false }
        let value = values[0].utf8
        let scheme = "bearer ".utf8
        guard value.count > scheme.count,
            zip(value.prefix(scheme.count), scheme).allSatisfy({ $0 | 0x20 == $1 | 0x20 })
        else { return false }
        let given = Array(SHA256.hash(data: Array(value.dropFirst(scheme.count))))
        var difference: UInt8 = 0
        for (a, b) in zip(given, digest) { difference |= a ^ b }
        return difference == 0
    }
}
