/// Pub/Sub, to wake waiting retries: one Redis server (`RedisSubscriber`) or a cluster
/// (`RedisClusterSubscriber`). Confined to one event loop.
///
/// Delivery is best effort (Pub/Sub has no replay of missed messages), so callers keep a
/// bounded poll as a safety net.
public protocol RedisPubSub: AnyObject {
    /// The command that publishes so that this subscriber hears it.
    var publishCommand: String { get }
    /// Calls `listener` on every message on `channel` until `unsubscribe`; returns the id to
    /// unsubscribe with. Many local listeners share one subscription.
    func subscribe(_ channel: String, listener: @escaping () -> Void) -> Int
    func unsubscribe(_ channel: String, id: Int)
    /// Told once when the server refuses a subscription (an ACL without the command, no
    /// sharded Pub/Sub before Redis 7): waiters then depend on their poll.
    var onRefused: ((_ error: String) -> Void)? { get set }
    func close()
}
