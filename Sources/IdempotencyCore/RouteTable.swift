/// The policies requests are resolved to: each route's, tried in order, then the top level's.
/// Made at start (patterns parsed, policies built) and shared by the loops; a lookup allocates
/// nothing but the `Host` values, asked for only when a route names a host.
public struct RouteTable: Sendable {
    /// Only what matching needs, by route: a `Route` also carries its whole configuration,
    /// which a loop over routes would retain and release field by field.
    private let paths: [PathPattern]
    private let hosts: [String?]
    private let routePolicies: [Policy]
    /// The top level's policy, for a request no route takes.
    public let fallback: Policy

    public init(_ configuration: ProxyConfiguration) {
        paths = configuration.routes.map(\.path)
        hosts = configuration.routes.map(\.host)
        routePolicies = configuration.routes.enumerated().map { index, route in Policy(configuration, route: route, routeIndex: index) }
        fallback = Policy(configuration, routeIndex: configuration.routes.count)
    }

    /// Every policy, in `routeIndex` order.
    public var policies: [Policy] { routePolicies + [fallback] }

    /// The policy of the first route that takes the request, else the top level's. `host` is
    /// looked up only when a route names one.
    public func policy(target: String, host: @autoclosure () -> String?) -> Policy {
        guard !paths.isEmpty else { return fallback }
        var target = target
        return target.withUTF8 { bytes in
            let raw = UnsafeRawBufferPointer(bytes)
            let path = UnsafeRawBufferPointer(rebasing: raw[..<(raw.firstIndex(of: UInt8(ascii: "?")) ?? raw.count)])
            for index in paths.indices where paths[index].matches(path) {
                guard let wanted = hosts[index] else { return routePolicies[index] }
                if let sent = host(), Route.host(sent, is: wanted) { return routePolicies[index] }
            }
            return fallback
        }
    }
}
