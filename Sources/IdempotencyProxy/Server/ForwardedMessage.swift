import HTTPWire
import IdempotencyCore

/// How a message is rewritten as it crosses the proxy (SPEC §4), beyond `ForwardedRequest`.
enum ForwardedMessage {
    /// The origin-form (`/path?query`) of an absolute-form target (`http://host/path?query`),
    /// which a server must accept (RFC 9112 §3.2.2); nil for any other target. The upstream
    /// gets the origin-form, and the fingerprint does not depend on which form a client used.
    static func originForm(of target: String) -> String? {
        guard target.utf8.first != UInt8(ascii: "/") else { return nil }
        let lowered = target.prefix(8).lowercased()
        let scheme = lowered.hasPrefix("http://") ? 7 : lowered.hasPrefix("https://") ? 8 : nil
        guard let scheme else { return nil }
        let afterScheme = target.dropFirst(scheme)
        guard let pathStart = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) else { return "/" }
        let rest = afterScheme[pathStart...]
        return rest.hasPrefix("?") ? "/" + rest : String(rest)
    }

    /// A buffered upstream response in its stored form: its end-to-end headers (`ResponseParser`
    /// hands on no others), with `Content-Length` stating the body size so that the first
    /// answer and every replay are the same.
    static func storedResponse(head: ResponseHead, body: [UInt8]) -> StoredResponse {
        let status = Int(head.status.code)
        let bodyless = status == 204 || status == 304 || status < 200
        var headers = head.headers.filter { !HopByHopHeaders.equalsIgnoringASCIICase($0.name, "content-length") }
        if !bodyless { headers.append(("Content-Length", String(body.count))) }
        return StoredResponse(status: status, headers: headers, body: body)
    }
}
