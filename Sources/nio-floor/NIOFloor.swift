import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The floor of the stack under `scripts/bench`'s ratios: what SwiftNIO itself costs a request
/// on this machine, with no HTTP and no store.
/// - `relay PORT UPSTREAM_PORT`: each client connection gets its own upstream connection and
///   the bytes are copied both ways as they come: a proxy that does nothing but I/O.
/// - `answer PORT`: every request is answered with the same stored bytes: a replay without
///   parsing, hashing or Redis. Requests are counted by the empty line that ends each head, so
///   a body must not hold one (the bench's do not).
/// One event loop per core, as idemproxy runs. docs/performance.md, "The floor under each
/// ratio", has runs.
@main
enum NIOFloor {
    static let answer = """
        HTTP/1.1 201 Created\r
        Content-Type: application/json\r
        Content-Length: 31\r
        Idempotent-Replayed: true\r
        \r
        {"id":"ch_1","object":"charge"}
        """

    enum Mode {
        case relay(upstreamPort: Int)
        case answer
    }

    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let ports = arguments.dropFirst().compactMap { Int($0) }.filter { (1...65535).contains($0) }
        let mode: Mode
        switch (arguments.first, arguments.count, ports.count) {
        case ("relay", 3, 2): mode = .relay(upstreamPort: ports[1])
        case ("answer", 2, 1): mode = .answer
        default: fail("usage: nio-floor relay PORT UPSTREAM_PORT | nio-floor answer PORT")
        }
        let port = ports[0]
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                switch mode {
                case .relay(let upstreamPort):
                    return relay(channel, to: upstreamPort)
                case .answer:
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(FixedAnswer(channel.allocator.buffer(string: answer)))
                    }
                }
            }
        do {
            try bootstrap.bind(host: "127.0.0.1", port: port).wait().closeFuture.wait()
        } catch {
            fail("nio-floor: \(error)")
        }
    }

    private static func fail(_ message: String) -> Never {
        let line = Array((message + "\n").utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(2)
    }

    /// Both channels are on the client's event loop, so the two handlers never change threads.
    private static func relay(_ channel: Channel, to upstreamPort: Int) -> EventLoopFuture<Void> {
        let client = Relay(), upstream = Relay()
        client.partner = upstream
        upstream.partner = client
        let handlers = NIOLoopBound((client: client, upstream: upstream), eventLoop: channel.eventLoop)
        return ClientBootstrap(group: channel.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { upstreamChannel in
                upstreamChannel.eventLoop.makeCompletedFuture {
                    try upstreamChannel.pipeline.syncOperations.addHandler(handlers.value.upstream)
                }
            }
            .connect(host: "127.0.0.1", port: upstreamPort)
            .flatMapThrowing { _ in try channel.pipeline.syncOperations.addHandler(handlers.value.client) }
    }
}

/// Answers each request head with the same bytes, flushed once per read.
final class FixedAnswer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let answer: ByteBuffer
    /// How much of "\r\n\r\n" the bytes read so far end with.
    private var matched = 0

    init(_ answer: ByteBuffer) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var heads = 0
        unwrapInboundIn(data).withUnsafeReadableBytes { bytes in
            for byte in bytes {
                let expected: UInt8 = matched % 2 == 0 ? 13 : 10
                if byte == expected {
                    matched += 1
                    if matched == 4 { heads += 1; matched = 0 }
                } else {
                    matched = byte == 13 ? 1 : 0
                }
            }
        }
        for _ in 0..<heads { context.write(wrapOutboundOut(answer), promise: nil) }
    }

    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
}

/// One side of a relay: what it reads is written to its partner's channel.
final class Relay: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    var partner: Relay?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.context?.write(data, promise: nil) }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }
    func channelInactive(context: ChannelHandlerContext) { partner?.context?.close(promise: nil) }
}
