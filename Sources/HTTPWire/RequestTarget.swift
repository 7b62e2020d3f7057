/// Request targets as a client may send them (RFC 9112 §3.2).
public enum RequestTarget {
    /// The origin-form (`/path?query`) of an absolute-form target (`http://host/path?query`),
    /// which a server must accept (RFC 9112 §3.2.2); nil for any other target. The upstream
    /// gets the origin-form, and the fingerprint does not depend on which form a client used.
    public static func originForm(of target: String) -> String? {
        guard target.utf8.first != UInt8(ascii: "/") else { return nil }
        let lowered = target.prefix(8).lowercased()
        let scheme = lowered.hasPrefix("http://") ? 7 : lowered.hasPrefix("https://") ? 8 : nil
        guard let scheme else { return nil }
        let afterScheme = target.dropFirst(scheme)
        guard let pathStart = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) else { return "/" }
        let rest = afterScheme[pathStart...]
        return rest.hasPrefix("?") ? "/" + rest : String(rest)
    }
}
