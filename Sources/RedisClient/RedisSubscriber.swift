import NIOCore

/// Pub/Sub on one server, on a connection of its own (a subscribed connection can run no other
/// commands). Subscriptions are renewed after a reconnect, and after a move to another server
/// (a Sentinel's new master).
public final class RedisSubscriber: RedisPubSub {
    public let publishCommand = "PUBLISH"
    public var onRefused: ((_ error: String) -> Void)?
    private var refusalTold = false
    private let eventLoop: any EventLoop
    /// nil until there is a server to listen on (a Sentinel's master not known yet).
    private var connection: RedisConnection?
    private var listeners = PubSubListeners()

    /// Call on `eventLoop`.
    public init(configuration: RedisConfiguration, eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        move(to: configuration)
    }

    /// Listens nowhere until `move(to:)`; subscriptions made meanwhile are kept for then.
    public init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Listens on this server from now on, with every current subscription.
    public func move(to configuration: RedisConfiguration) {
        connection?.close()
        let connection = RedisConnection(configuration: configuration, eventLoop: eventLoop) { [weak self] reply in
            self?.received(reply)
        }
        connection.onReady = { [weak self] in self?.resubscribe() }
        self.connection = connection
    }

    private func received(_ reply: RedisReply) {
        switch RedisPush(reply) {
        case .message(let channel, _):
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
        if first { connection?.sendUnanswered(["SUBSCRIBE", .string(channel)]) }
        return id
    }

    public func unsubscribe(_ channel: String, id: Int) {
        if listeners.remove(channel, id: id) { connection?.sendUnanswered(["UNSUBSCRIBE", .string(channel)]) }
    }

    public func close() { connection?.close() }

    private func resubscribe() {
        for channel in listeners.channels { connection?.sendUnanswered(["SUBSCRIBE", .string(channel)]) }
    }
}
