import NIOCore

/// Redis Pub/Sub on its own connection (a subscribed connection can run no other commands),
/// confined to one event loop like `RedisConnection`.
///
/// Many local listeners can share a channel: it is subscribed once, when the first listener
/// arrives, and unsubscribed when the last leaves. Subscriptions are renewed after a reconnect.
/// Delivery is best effort (Pub/Sub has no replay of missed messages), so callers keep a
/// bounded poll as a safety net.
public final class RedisSubscriber {
    private var connection: RedisConnection!
    private var listeners: [String: [Int: () -> Void]] = [:]
    private var nextID = 0

    /// Call on `eventLoop`.
    public init(configuration: RedisConfiguration, eventLoop: any EventLoop) {
        connection = RedisConnection(configuration: configuration, eventLoop: eventLoop) { [weak self] channel, _ in
            self?.deliver(String(buffer: channel))
        }
        connection.onReady = { [weak self] in self?.resubscribe() }
    }

    /// Calls `listener` on every message published on `channel` until `unsubscribe`.
    /// Returns the id to unsubscribe with.
    public func subscribe(_ channel: String, listener: @escaping () -> Void) -> Int {
        nextID += 1
        if listeners[channel] == nil {
            listeners[channel] = [:]
            connection.send(["SUBSCRIBE", .string(channel)]) { _ in }
        }
        listeners[channel]![nextID] = listener
        return nextID
    }

    public func unsubscribe(_ channel: String, id: Int) {
        guard listeners[channel]?.removeValue(forKey: id) != nil, listeners[channel]!.isEmpty else { return }
        listeners[channel] = nil
        connection.send(["UNSUBSCRIBE", .string(channel)]) { _ in }
    }

    /// Channels with a listener now.
    public var channelCount: Int { listeners.count }

    public func close() { connection.close() }

    private func deliver(_ channel: String) {
        guard let callbacks = listeners[channel] else { return }
        for callback in callbacks.values { callback() }
    }

    private func resubscribe() {
        for channel in listeners.keys { connection.send(["SUBSCRIBE", .string(channel)]) { _ in } }
    }
}
