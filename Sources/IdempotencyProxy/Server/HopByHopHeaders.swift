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

    /// `headers` without hop-by-hop headers. Most messages have none but framing, so the
    /// common case checks names without allocating and copies only when something goes.
    static func removing(from headers: HTTPHeaders) -> HTTPHeaders {
        let named = headers[canonicalForm: "connection"].map { $0.lowercased() }
        func isHop(_ name: String) -> Bool {
            names.contains { equalsIgnoringASCIICase(name, $0) } || named.contains { equalsIgnoringASCIICase(name, $0) }
        }
        guard headers.contains(where: { isHop($0.name) }) else { return headers }
        var out = HTTPHeaders()
        out.reserveCapacity(headers.count)
        for (name, value) in headers where !isHop(name) { out.add(name: name, value: value) }
        return out
    }

    /// True when the message body is chunked (it then needs re-framing on the other side).
    static func isChunked(_ headers: HTTPHeaders) -> Bool {
        headers[canonicalForm: "transfer-encoding"].contains { equalsIgnoringASCIICase(String($0), "chunked") }
    }

    /// `b` must be lower-case ASCII.
    static func equalsIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
        var a = a.utf8.makeIterator()
        for expected in b.utf8 {
            guard let byte = a.next() else { return false }
            let lowered = byte >= 65 && byte <= 90 ? byte | 0x20 : byte
            if lowered != expected { return false }
        }
        return a.next() == nil
    }
}
