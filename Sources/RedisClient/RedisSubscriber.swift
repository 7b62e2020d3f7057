import NIOCore

/// Pub/Sub on one server, on a connection of its own (a subscribed connection can run no other
/// commands). Subscriptions are renewed after a reconnect.
public final class RedisSubscriber: RedisPubSub {
    public let publishCommand = "PUBLISH"
    private var connection: RedisConnection!
    private var listeners = PubSubListeners()

    /// Call on `eventLoop`.
    public init(configuration: RedisConfiguration, eventLoop: any EventLoop) {
        connection = RedisConnection(configuration: configuration, eventLoop: eventLoop) { [weak self] reply in
            guard let self, case .message(let channel) = RedisPush(reply) else { return }
            for listener in self.listeners.listeners(of: channel) { listener() }
        }
        connection.onReady = { [weak self] in self?.resubscribe() }
    }

    public func subscribe(_ channel: String, listener: @escaping () -> Void) -> Int {
        let (id, first) = listeners.add(channel, listener)
        if first { connection.sendUnanswered(["SUBSCRIBE", .string(channel)]) }
        return id
    }

    public func unsubscribe(_ channel: String, id: Int) {
        if listeners.remove(channel, id: id) { connection.sendUnanswered(["UNSUBSCRIBE", .string(channel)]) }
    }

    public func close() { connection.close() }

    private func resubscribe() {
        for channel in listeners.channels { connection.sendUnanswered(["SUBSCRIBE", .string(channel)]) }
    }
}
