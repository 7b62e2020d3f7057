/// The policies requests are resolved to: each route's, tried in order, then the top level's.
/// Made at start (patterns parsed, policies built); a lookup allocates nothing.
public struct RouteTable: Sendable {
    private let routes: [(route: Route, policy: Policy)]
    /// The top level's policy, for a request no route takes.
    public let fallback: Policy

    public init(_ configuration: ProxyConfiguration) {
        routes = configuration.routes.enumerated().map { index, route in
            (route, Policy(configuration, route: route, routeIndex: index))
        }
        fallback = Policy(configuration, routeIndex: configuration.routes.count)
    }

    /// Every policy, in `routeIndex` order.
    public var policies: [Policy] { routes.map(\.policy) + [fallback] }

    /// The policy of the first route that takes the request, else the top level's. `host` is
    /// looked up only when a route names one.
    public func policy(target: String, host: @autoclosure () -> String?) -> Policy {
        guard !routes.isEmpty else { return fallback }
        var target = target
        return target.withUTF8 { bytes in
            let raw = UnsafeRawBufferPointer(bytes)
            let path = UnsafeRawBufferPointer(rebasing: raw[..<(raw.firstIndex(of: UInt8(ascii: "?")) ?? raw.count)])
            for (route, policy) in routes where route.takes(path: path, host: route.host == nil ? nil : host()) {
                return policy
            }
            return fallback
        }
    }
}
