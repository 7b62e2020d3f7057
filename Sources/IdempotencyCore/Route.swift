/// A route of the configuration (docs/behaviour.md, "Routes"): which requests it takes, and the
/// keys it sets for them.
public struct Route: Sendable, Equatable {
    /// The route of requests that no route takes.
    public static let defaultName = "default"

    public var name: String
    public var path: PathPattern
    /// Lower case, without a port; nil: any host.
    public var host: String?
    public var protect = true
    /// nil: the key is the `key_header`'s value.
    public var keyFromJSON: JSONPointer?
    /// The top-level configuration with the route's own keys applied over it.
    public var settings: ProxyConfiguration

    /// Whether a `Host` value names `wanted` (lower case) once its port is removed, in any
    /// case: `API.example:8443` is `api.example`, `[::1]:80` is `[::1]`. Compared in place.
    static func host(_ sent: String, is wanted: String) -> Bool {
        let bytes = sent.utf8
        var end = bytes.endIndex
        if bytes.first == UInt8(ascii: "[") {
            if let close = bytes.firstIndex(of: UInt8(ascii: "]")) { end = bytes.index(after: close) }
        } else if let colon = bytes.lastIndex(of: UInt8(ascii: ":")) {
            end = colon
        }
        return bytes[..<end].elementsEqual(wanted.utf8) { sentByte, wantedByte in
            (sentByte >= UInt8(ascii: "A") && sentByte <= UInt8(ascii: "Z") ? sentByte | 0x20 : sentByte) == wantedByte
        }
    }
}
