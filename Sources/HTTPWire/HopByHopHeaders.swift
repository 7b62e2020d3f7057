import NIOHTTP1

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

    /// The headers a `Connection` value names as hop-by-hop, beyond its usual tokens (`close`,
    /// `keep-alive`), which name no header of their own (or one that is listed anyway).
    /// `Content-Length` is never one: it frames the body being sent, and a message without it
    /// would have its body read as the next message.
    public static func namedHeaders(inConnection value: String) -> [Substring] {
        listElements(value).filter { token in
            !equalsIgnoringASCIICase(token, "close") && !equalsIgnoringASCIICase(token, "keep-alive")
                && !equalsIgnoringASCIICase(token, "content-length")
        }
    }

    /// Bit n set: some listed name is n bytes long (all are shorter than 64).
    private static let listedLengths: UInt64 = names.reduce(0) { $0 | 1 << UInt64($1.utf8.count) }

    public static func isListed(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { isListed(UnsafeRawBufferPointer($0)[...]) }
    }

    /// `isListed` for a name still in the received bytes (the response parser's case).
    static func isListed(_ name: HeadSyntax.Bytes) -> Bool {
        let length = name.count
        return length < 64 && listedLengths & (1 << UInt64(length)) != 0
            && names.contains { HeadSyntax.equalsIgnoringCase(name, $0.utf8) }
    }

    /// True when the message body is chunked (it then needs re-framing on the other side).
    public static func isChunked(_ headers: HTTPHeaders) -> Bool {
        headers.contains { equalsIgnoringASCIICase($0.name, "transfer-encoding") && namesChunked($0.value) }
    }

    /// A `Transfer-Encoding` value lists `chunked`.
    public static func namesChunked(_ value: String) -> Bool {
        listElements(value).contains { equalsIgnoringASCIICase($0, "chunked") }
    }

    /// The elements of a list header value, trimmed, empty ones skipped: `HeadSyntax.listElements`
    /// for a value already in a `String`.
    static func listElements(_ value: String) -> [Substring] {
        value.split(separator: ",").map { element in
            var element = element
            while let first = element.first, first == " " || first == "\t" { element = element.dropFirst() }
            while let last = element.last, last == " " || last == "\t" { element = element.dropLast() }
            return element
        }.filter { !$0.isEmpty }
    }

    /// `b` must be lower-case ASCII. Not generic: callers in other modules would run an
    /// unspecialised generic (metadata lookups per byte; it was 6% of a first-time request).
    public static func equalsIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
        HeadSyntax.equalsIgnoringCase(a.utf8, b.utf8)
    }

    public static func equalsIgnoringASCIICase(_ a: Substring, _ b: String) -> Bool {
        HeadSyntax.equalsIgnoringCase(a.utf8, b.utf8)
    }
}

