import IdempotencyCore
import NIOCore
import NIOSSL
import NIOTLS

/// Waits for the TLS handshake of a new `https://` connection to the upstream. The connection
/// counts as made only once the handshake has completed, so a failed one (a certificate that
/// does not verify, a refused handshake, one that stalls past the connect timeout) is "no
/// connection": nothing was sent, so the claim is released and the client gets 502, never a
/// request the upstream may have acted on. It also verifies the server name (see `UpstreamTLS`).
/// It stays in the pipeline, passing everything on once the handshake succeeded, so that the
/// pool always finds it and no connection skips the check.
final class UpstreamHandshake: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let promise: EventLoopPromise<Void>
    private let timeout: TimeAmount
    private let serverName: String?
    private var timer: Scheduled<Void>?
    private var finished = false
    private var failed = false

    var done: EventLoopFuture<Void> { promise.futureResult }

    init(eventLoop: any EventLoop, timeout: TimeAmount, serverName: String?) {
        promise = eventLoop.makePromise()
        self.timeout = timeout
        self.serverName = serverName
    }

    func handlerAdded(context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            finish(.failure(UpstreamTLSError("no TLS handshake with the upstream within the connect timeout")))
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(.failure(UpstreamTLSError("the connection closed before the TLS handshake completed")))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, !finished, let serverName {
            let names = dnsNames(context)
            guard let names, CertificateName.covers(serverName, dnsNames: names) else {
                let named = names.map { $0.isEmpty ? "no DNS name" : $0.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ", ") }
                return fail(context, "the upstream's certificate is not for \(serverName) (it names \(named ?? "nothing readable"))")
            }
        }
        if case TLSUserEvent.handshakeCompleted = event { finish(.success(())) }
        context.fireUserInboundEventTriggered(event)
    }

    /// Nothing from a connection that failed its check reaches the upstream connection.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !finished else { return context.fireErrorCaught(error) }
        fail(context, "TLS handshake with the upstream failed: \(error)")
    }

    private func fail(_ context: ChannelHandlerContext, _ why: String) {
        failed = true
        finish(.failure(UpstreamTLSError(why)))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(UpstreamTLSError("the upstream closed the connection during the TLS handshake")))
        context.fireChannelInactive()
    }

    /// The DNS names of the upstream's certificate, as bytes; nil if there is no certificate
    /// to read (the connection then fails).
    private func dnsNames(_ context: ChannelHandlerContext) -> [[UInt8]]? {
        guard let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self),
            let certificate = tls.peerCertificate
        else { return nil }
        return certificate._subjectAlternativeNames().compactMap { name in
            name.nameType == .dnsName ? Array(name.contents) : nil
        }
    }

    private func finish(_ result: Result<Void, any Error>) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        promise.completeWith(result)
    }
}

/// Why an `https://` connection to the upstream could not be made.
struct UpstreamTLSError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
