import NIOCore

/// Back-pressure across the proxy: one side's reads are held back while the other side cannot
/// take more, and the held-back read is issued when it can again. Used by both the client and
/// the upstream handler, each forwarding its `read` outbound event through `read(_:)`.
struct ReadGate {
    private var paused = false
    private var pending = false

    mutating func pause() { paused = true }

    /// Lets reads through again, issuing one that was held back.
    mutating func resume(_ context: ChannelHandlerContext?) {
        paused = false
        if pending, let context {
            pending = false
            context.read()
        }
    }

    /// The handler's `read(context:)`: pass the read on, or hold it while paused.
    mutating func read(_ context: ChannelHandlerContext) {
        if paused { pending = true } else { context.read() }
    }
}
