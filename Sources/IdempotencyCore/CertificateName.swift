/// Whether a certificate's DNS names cover a server name (RFC 6125 §6.4): compared without
/// regard to ASCII case or a trailing dot; a wildcard only as the whole leftmost label, standing
/// for exactly one label. swift-nio-ssl also accepts a certificate whose IP address matches the
/// connected one whatever the name, which is not what `upstream_tls_server_name` promises.
public enum CertificateName {
    public static func covers(_ serverName: String, dnsNames: [String]) -> Bool {
        let name = normalized(serverName)
        guard !name.isEmpty else { return false }
        return dnsNames.contains { pattern in
            let pattern = normalized(pattern)
            if pattern == name { return true }
            guard pattern.hasPrefix("*."), let dot = name.firstIndex(of: ".") else { return false }
            let suffix = pattern.dropFirst(2)
            // The wildcard stands for one non-empty label, and never for a top-level domain.
            return dot != name.startIndex && name[name.index(after: dot)...] == suffix && suffix.contains(".")
        }
    }

    private static func normalized(_ name: String) -> String {
        var lower = String(name.lowercased())
        if lower.hasSuffix(".") { lower.removeLast() }
        return lower
    }
}
