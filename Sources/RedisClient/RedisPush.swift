/// What a subscribed connection receives. RESP2 has no push type: messages, the answers to
/// subscribe commands and the server's own notices all arrive as replies nobody asked for.
package enum RedisPush: Equatable {
    /// A message on `channel` (`message`, or `smessage` for a shard channel), with its payload.
    case message(channel: String, payload: String)
    /// The connection no longer listens on `channel`: the answer to our own unsubscribe or,
    /// for a shard channel, the server's notice that the channel's slot moved elsewhere.
    case unsubscribed(channel: String)
    /// A subscribe command was refused (in a cluster: `MOVED` when another node serves the slot).
    case error(String)
    /// A subscribe confirmation, or anything else that needs no action.
    case other

    package init(_ reply: RedisReply) {
        if case .error(let message) = reply {
            self = .error(message)
            return
        }
        guard case .array(let items) = reply, items.count >= 2, let kind = items[0].string,
            let channel = items[1].string
        else {
            self = .other
            return
        }
        switch kind {
        case "message" where items.count == 3, "smessage" where items.count == 3:
            self = .message(channel: channel, payload: items[2].string ?? "")
        case "unsubscribe", "sunsubscribe": self = .unsubscribed(channel: channel)
        default: self = .other
        }
    }
}
