import NIOHTTP1

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// de facto ones proxies strip as well (`Keep-Alive`, `Proxy-Connection`, as Go's
/// `httputil.ReverseProxy` does). They are never forwarded, in either direction, and neither
/// are the headers that `Connection` itself names.
enum HopByHopHeaders {
    static let names: Set<String> = [
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

    /// A copy of `headers` without hop-by-hop headers.
    static func removing(from headers: HTTPHeaders) -> HTTPHeaders {
        var named = Set<String>()
        for value in headers[canonicalForm: "connection"] { named.insert(value.lowercased()) }
        var out = HTTPHeaders()
        out.reserveCapacity(headers.count)
        for (name, value) in headers {
            let lowered = name.lowercased()
            if names.contains(lowered) || named.contains(lowered) { continue }
            out.add(name: name, value: value)
        }
        return out
    }

    /// True when the message body is chunked (it then needs re-framing on the other side).
    static func isChunked(_ headers: HTTPHeaders) -> Bool {
        headers[canonicalForm: "transfer-encoding"].contains { $0.lowercased() == "chunked" }
    }
}
