/// Whether a certificate's DNS names cover a server name (RFC 6125 §6.4), byte by byte:
/// ASCII case folded, a trailing dot ignored, a wildcard only as the whole leftmost label and
/// standing for exactly one label (never an IDN `xn--` one, nor a top-level domain). A name
/// with anything but letters, digits, `-`, `.` and that wildcard never matches. swift-nio-ssl
/// also accepts a certificate whose IP address matches the connected one whatever the name,
/// which is not what `upstream_tls_server_name` promises.
public enum CertificateName {
    public static func covers(_ serverName: String, dnsNames: [[UInt8]]) -> Bool {
        guard let name = normalized(Array(serverName.utf8)), !name.isEmpty, !name.contains(star) else { return false }
        return dnsNames.contains { raw in
            guard let pattern = normalized(raw) else { return false }
            if pattern == name { return true }
            guard pattern.count > 2, pattern[0] == star, pattern[1] == dot, !pattern[2...].contains(star),
                let firstDot = name.firstIndex(of: dot), firstDot > 0
            else { return false }
            let suffix = pattern[2...]
            return suffix.contains(dot) && name[(firstDot + 1)...].elementsEqual(suffix)
                && !name.starts(with: Array("xn--".utf8))
        }
    }

    private static let star = UInt8(ascii: "*")
    private static let dot = UInt8(ascii: ".")

    /// Lower case, without a trailing dot; nil for anything but letters, digits, `-`, `.` and
    /// `*`, or an empty label.
    private static func normalized(_ bytes: [UInt8]) -> [UInt8]? {
        var name = bytes
        if name.last == dot { name.removeLast() }
        var previous = dot
        for (index, byte) in name.enumerated() {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): name[index] = byte + 32
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), star: break
            case dot where previous != dot: break
            default: return nil
            }
            previous = byte
        }
        return previous == dot && !name.isEmpty ? nil : name
    }
}
