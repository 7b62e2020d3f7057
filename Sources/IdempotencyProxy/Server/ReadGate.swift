import NIOCore

/// Back-pressure across the proxy: a side's reads are held back while any reason to hold them
/// stands, and the held-back read is issued when none does. Used by both the client and the
/// upstream handler, each forwarding its `read` outbound event through `read(_:)`.
struct ReadGate {
    enum Reason: UInt8 {
        /// The other side of the exchange cannot take more bytes for now.
        case peerFull = 1
        /// Requests pipelined behind the current one are waiting their turn.
        case pipelined = 2
    }

    private var holds: UInt8 = 0
    private var pending = false

    mutating func pause(_ reason: Reason) { holds |= reason.rawValue }

    /// Lifts `reason`; issues a held-back read if nothing else holds reads.
    mutating func resume(_ reason: Reason, _ context: ChannelHandlerContext?) {
        holds &= ~reason.rawValue
        if holds == 0, pending, let context {
            pending = false
            context.read()
        }
    }

    /// The handler's `read(context:)`: pass the read on, or hold it while paused.
    mutating func read(_ context: ChannelHandlerContext) {
        if holds != 0 { pending = true } else { context.read() }
    }
}
