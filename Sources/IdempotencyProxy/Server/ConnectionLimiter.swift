#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore

/// `max_connections` on the client listener (docs/behaviour.md, "Connection limits"). It sits
/// on the server channel, on the accepting loop: at the cap it stops asking for accepts, so
/// new connections wait in the kernel's backlog instead of costing descriptors, and asks every
/// loop to shed the connections that hold a descriptor and give nothing (again every
/// `shedInterval` while the cap holds); each closed connection lets accepting resume.
///
/// Descriptors that run out anyway (EMFILE, ENFILE while accepting) pause accepting for
/// `acceptBackoff`, as nginx does: NIO keeps a failed accept's read pending, so the listening
/// socket, still readable, would be accepted from again at once, spinning a core (NIO's
/// `AcceptBackoffHandler` only delays the next read, which never comes). Turning `autoRead`
/// off withdraws the pending read; it is turned on again after the pause. Idle and slow
/// connections are shed then too, as at the cap.
final class ConnectionLimiter: ChannelDuplexHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel
    typealias OutboundIn = Never

    static let shedInterval = TimeAmount.milliseconds(250)
    static let warnInterval = TimeAmount.seconds(10)
    /// How long accepting pauses after an accept error such as EMFILE (nginx: 500 ms).
    static let acceptBackoff = TimeAmount.milliseconds(500)

    private let cap: Int
    private let metrics: ProxyMetrics
    private let logger: Logger
    /// Asks every event loop to shed what it can.
    private let shed: () -> Void
    private var open = 0
    /// A read (the next accepts) was held back at the cap.
    private var readHeld = false
    private var shedding: Scheduled<Void>?
    /// Accepting paused after an accept error.
    private var acceptPause: Scheduled<Void>?
    private var lastWarning: NIODeadline?

    init(cap: Int, metrics: ProxyMetrics, logger: Logger, shed: @escaping () -> Void) {
        self.cap = cap
        self.metrics = metrics
        self.logger = logger
        self.shed = shed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        open += 1
        metrics.clientConnection(open: true)
        // The child closes on its own loop; the count lives on this one.
        let here = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        child.closeFuture.whenComplete { _ in
            here.eventLoop.execute { here.value.0.closed(here.value.1) }
        }
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        guard open >= cap else { return context.read() }
        readHeld = true
        guard shedding == nil else { return }
        metrics.connectionLimitWasReached()
        warn("max_connections (\(cap)) reached: accepting paused, idle and slow connections shed")
        shedWhileFull(context)
    }

    /// Sheds now, and again every `shedInterval` until the count drops under the cap.
    private func shedWhileFull(_ context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        shed()
        shedding = context.eventLoop.assumeIsolated().scheduleTask(in: Self.shedInterval) {
            self.shedWhileFull(context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Each of these leaves the failed accept's read pending, as EMFILE does.
        guard let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode) else {
            return context.fireErrorCaught(error)
        }
        warn("out of descriptors or memory while accepting (\(error)); accepting pauses \(Self.acceptBackoff); raise LimitNOFILE or lower max_connections")
        guard acceptPause == nil, let options = context.channel.syncOptions else { return }
        // The descriptors are in use: the idle and slow connections among them go first.
        shed()
        try? options.setOption(.autoRead, value: false)
        acceptPause = context.eventLoop.assumeIsolated().scheduleTask(in: Self.acceptBackoff) {
            self.acceptPause = nil
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    /// The listener closed (shutdown): nothing more to shed or resume.
    func handlerRemoved(context: ChannelHandlerContext) {
        shedding?.cancel()
        shedding = nil
        acceptPause?.cancel()
        acceptPause = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        handlerRemoved(context: context)
        context.fireChannelInactive()
    }

    private func closed(_ context: ChannelHandlerContext) {
        open -= 1
        metrics.clientConnection(open: false)
        // (While accepting is paused for an error, the pause's end resumes it.)
        guard readHeld, open < cap, acceptPause == nil else { return }
        readHeld = false
        shedding?.cancel()
        shedding = nil
        context.read()
    }

    /// One line per `warnInterval`, not one per event.
    private func warn(_ message: String) {
        let now = NIODeadline.now()
        if let lastWarning, now - lastWarning < Self.warnInterval { return }
        lastWarning = now
        logger.warning("\(message)")
    }
}
