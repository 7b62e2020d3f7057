/// The local listeners of each channel. A subscriber subscribes a channel on the server when
/// its first listener arrives and unsubscribes it when the last one leaves.
struct PubSubListeners {
    private var byChannel: [String: [Int: () -> Void]] = [:]
    private var nextID = 0

    /// The new listener's id, and whether the channel had no listener before.
    mutating func add(_ channel: String, _ listener: @escaping () -> Void) -> (id: Int, first: Bool) {
        nextID += 1
        let first = byChannel[channel] == nil
        byChannel[channel, default: [:]][nextID] = listener
        return (nextID, first)
    }

    /// True when that was the channel's last listener.
    mutating func remove(_ channel: String, id: Int) -> Bool {
        guard byChannel[channel]?.removeValue(forKey: id) != nil, byChannel[channel]!.isEmpty else { return false }
        byChannel[channel] = nil
        return true
    }

    /// A copy, so that a listener may unsubscribe while the others are called.
    func listeners(of channel: String) -> [() -> Void] {
        byChannel[channel].map { Array($0.values) } ?? []
    }

    var channels: Dictionary<String, [Int: () -> Void]>.Keys { byChannel.keys }
}
