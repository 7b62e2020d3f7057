import NIOCore

/// Pub/Sub on one server, on a connection of its own (a subscribed connection can run no other
/// commands). Subscriptions are renewed after a reconnect.
public final class RedisSubscriber: RedisPubSub {
    public let publishCommand = "PUBLISH"
    public var onRefused: ((_ error: String) -> Void)?
    private var refusalTold = false
    private var connection: RedisConnection!
    private var listeners = PubSubListeners()

    /// Call on `eventLoop`.
    public init(configuration: RedisConfiguration, eventLoop: any EventLoop) {
        connection = RedisConnection(configuration: configuration, eventLoop: eventLoop) { [weak self] reply in
            self?.received(reply)
        }
        connection.onReady = { [weak self] in self?.resubscribe() }
    }

    private func received(_ reply: RedisReply) {
        switch RedisPush(reply) {
        case .message(let channel):
            for listener in listeners.listeners(of: channel) { listener() }
        case .error(let message) where !refusalTold:
            refusalTold = true
            onRefused?(message)
        case .error, .unsubscribed, .other:
            break
        }
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
