/// What one request runs under: the top level's keys, or a route's (docs/behaviour.md,
/// "Routes"). It is resolved once, when the request's head is read, and handed to the request;
/// nothing a request decides reads the configuration after that. A class, so that handing it
/// over is one reference, not a copy of its strings and lists.
public final class Policy: Sendable {
    /// The route's name, `default` for the top level: the `route` of the metrics and the access log.
    public let route: String
    /// Its place in the route table (`default` last): the metrics' index.
    public let routeIndex: Int
    /// False: every request is streamed through untouched.
    public let protect: Bool
    public let methods: Set<String>
    /// Where the key is: the `key_header` (nil) or the JSON body at this pointer.
    public let keyFromJSON: JSONPointer?
    public let keyHeader: String
    public let maxKeyLength: Int
    public let requireKey: Bool
    public let scopeHeaders: [String]
    public let keyPrefix: String
    public let fingerprint: Bool
    public let maxRequestBody: Int
    public let maxStoredResponse: Int
    public let lockTTL: Duration
    public let responseTTL: Duration
    public let retention: Duration
    public let inflightWait: Duration
    public let upstreamTimeout: Duration
    public let releaseStatuses: ReleaseStatuses
    public let replayHeader: String
    public let redisTimeout: Duration
    public let redisWaitReplicas: Int
    public let onRedisError: ProxyConfiguration.OnRedisError
    /// A long-term store is configured (docs/behaviour.md §3, long-term store).
    public let longTerm: Bool
    public let postgresTimeout: Duration
    public let onPostgresError: ProxyConfiguration.OnPostgresError

    /// The top level's policy (`route` nil), or a route's, whose overrides `route.settings` holds.
    public init(_ c: ProxyConfiguration, route: Route? = nil, routeIndex: Int = 0) {
        let s = route?.settings ?? c
        self.route = route?.name ?? Route.defaultName
        self.routeIndex = routeIndex
        protect = route?.protect ?? true
        methods = Set(s.methods)
        keyFromJSON = route?.keyFromJSON
        keyHeader = s.keyHeader
        maxKeyLength = s.maxKeyLength
        requireKey = s.requireKey
        scopeHeaders = s.scopeHeaders
        keyPrefix = s.keyPrefix
        fingerprint = s.fingerprint
        maxRequestBody = s.maxRequestBody
        maxStoredResponse = s.maxStoredResponse
        lockTTL = .milliseconds(s.lockTTLMs)
        responseTTL = .milliseconds(s.responseTTLMs)
        retention = .milliseconds(s.retentionMs)
        inflightWait = .milliseconds(s.inflightWaitMs)
        upstreamTimeout = .milliseconds(s.upstreamTimeoutMs)
        releaseStatuses = s.releaseStatuses
        replayHeader = s.replayHeader
        redisTimeout = .milliseconds(s.redisTimeoutMs)
        redisWaitReplicas = s.redisWaitReplicas
        onRedisError = s.onRedisError
        longTerm = s.postgresURL != nil
        postgresTimeout = .milliseconds(s.postgresTimeoutMs)
        onPostgresError = s.onPostgresError
    }
}
