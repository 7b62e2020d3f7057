/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// de facto ones proxies strip as well (`Keep-Alive`, `Proxy-Connection`, as Go's
/// `httputil.ReverseProxy` does). They are never forwarded, in either direction, and neither
/// are the headers that `Connection` itself names.
public enum HopByHopHeaders {
    public static let names: [String] = [
        "connection",
        "proxy-connection",  // non-standard, still sent by some clients
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",  // RFC 9110 §11.7.1: for the proxy only
        "proxy-authorization",  // RFC 9110 §11.7.2: for the proxy only
    ]

    /// Bit n set: some listed name is n bytes long (all are shorter than 64).
    private static let listedLengths: UInt64 = names.reduce(0) { $0 | 1 << UInt64($1.utf8.count) }

    /// `name` (as received) is one of `names`, ASCII case ignored.
    static func isListed(_ name: HeadSyntax.Bytes) -> Bool {
        let length = name.count
        return length < 64 && listedLengths & (1 << UInt64(length)) != 0
            && names.contains { HeadSyntax.equalsIgnoringCase(name, $0.utf8) }
    }

    /// `b` must be lower-case ASCII. Not generic: callers in other modules would run an
    /// unspecialised generic (metadata lookups per byte; it was 6% of a first-time request).
    public static func equalsIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
        HeadSyntax.equalsIgnoringCase(a.utf8, b.utf8)
    }
}

