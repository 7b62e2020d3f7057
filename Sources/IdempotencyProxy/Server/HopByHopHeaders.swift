import NIOHTTP1

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// de facto ones proxies strip as well (`Keep-Alive`, `Proxy-Connection`, as Go's
/// `httputil.ReverseProxy` does). They are never forwarded, in either direction, and neither
/// are the headers that `Connection` itself names.
enum HopByHopHeaders {
    static let names: [String] = [
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

    /// `headers` without hop-by-hop headers. It runs twice per proxied request, so the common
    /// case (nothing to remove but framing) looks at each name once, by length first, and
    /// copies only when something goes.
    static func removing(from headers: HTTPHeaders) -> HTTPHeaders {
        var named: [String] = []
        var found = false
        for (name, value) in headers where isListed(name) {
            found = true
            if equalsIgnoringASCIICase(name, "connection") {
                named += value.split(separator: ",").map { $0.trimmingCharacters(in: " \t").lowercased() }
            }
        }
        guard found else { return headers }
        var out = HTTPHeaders()
        out.reserveCapacity(headers.count)
        for (name, value) in headers
        where !isListed(name) && !named.contains(where: { equalsIgnoringASCIICase(name, $0) }) {
            out.add(name: name, value: value)
        }
        return out
    }

    private static let listedLengths = Set(names.map(\.utf8.count))

    private static func isListed(_ name: String) -> Bool {
        listedLengths.contains(name.utf8.count) && names.contains { equalsIgnoringASCIICase(name, $0) }
    }

    /// True when the message body is chunked (it then needs re-framing on the other side).
    static func isChunked(_ headers: HTTPHeaders) -> Bool {
        headers[canonicalForm: "transfer-encoding"].contains { equalsIgnoringASCIICase(String($0), "chunked") }
    }

    /// `b` must be lower-case ASCII.
    static func equalsIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        return zip(a.utf8, b.utf8).allSatisfy { ($0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0) == $1 }
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> Substring {
        var s = self
        while let first = s.first, set.contains(first) { s = s.dropFirst() }
        while let last = s.last, set.contains(last) { s = s.dropLast() }
        return s
    }
}
