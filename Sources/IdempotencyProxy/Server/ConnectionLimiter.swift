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
/// Accept errors (EMFILE, ENFILE when descriptors run out anyway) come here too, behind NIO's
/// `AcceptBackoffHandler`, which pauses accepting instead of retrying at once: they are logged
/// once per `warnInterval` rather than spun on.
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
        shed()
        shedding = context.eventLoop.assumeIsolated().scheduleTask(in: Self.shedInterval) {
            self.shedWhileFull(context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? IOError, [EMFILE, ENFILE].contains(error.errnoCode) {
            warn("out of descriptors while accepting (\(error)); accepting pauses \(Self.acceptBackoff); raise LimitNOFILE or lower max_connections")
            return
        }
        context.fireErrorCaught(error)
    }

    private func closed(_ context: ChannelHandlerContext) {
        open -= 1
        metrics.clientConnection(open: false)
        guard readHeld, open < cap else { return }
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
