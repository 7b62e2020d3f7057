/// What the proxy does with client connections at `max_connections` (docs/behaviour.md,
/// "Connection limits"): it stops accepting, and sheds first the connections that hold a
/// descriptor and give nothing, so that a well-behaved client gets in during a slowloris flood.
public enum ConnectionShedding {
    /// What a client connection is doing, as far as shedding cares.
    public enum Activity: Equatable, Sendable {
        /// No request under way and no byte of the next one (a keep-alive connection between
        /// requests, or one that has sent nothing yet), since then (monotonic ns).
        case idle(since: UInt64)
        /// Part of a request head has arrived, the first byte then.
        case readingHead(since: UInt64)
        /// A request is being read or answered: never shed.
        case busy
    }

    /// How long a connection may sit idle, or trickle a head, before it may be shed at the
    /// cap: a normal client sends its whole head within a round trip of connecting, and this
    /// spares one that is about to.
    public static let graceNs: UInt64 = 1_000_000_000

    /// Descriptors kept out of the default cap for Redis, PostgreSQL, the listeners, the admin
    /// endpoint and logs.
    public static let reservedDescriptors = 64

    /// The default `max_connections`: half of what the reserve leaves, since each client
    /// connection may hold an upstream connection as well.
    public static func defaultMaxConnections(descriptorLimit: Int) -> Int {
        max(1, (descriptorLimit - reservedDescriptors) / 2)
    }

    /// The connections to close at the cap, by index: idle ones past the grace first, then
    /// heads trickling for longer than it, each oldest first.
    public static func victims(_ connections: [Activity], now: UInt64) -> [Int] {
        var idle: [(Int, UInt64)] = []
        var heads: [(Int, UInt64)] = []
        for (index, activity) in connections.enumerated() {
            switch activity {
            case .idle(let since) where since + graceNs <= now: idle.append((index, since))
            case .readingHead(let since) where since + graceNs <= now: heads.append((index, since))
            case .idle, .readingHead, .busy: break
            }
        }
        let oldestFirst = { (a: (Int, UInt64), b: (Int, UInt64)) in a.1 < b.1 }
        return idle.sorted(by: oldestFirst).map(\.0) + heads.sorted(by: oldestFirst).map(\.0)
    }
}
