import IdempotencyCore
import NIOCore
import NIOSSL
import NIOTLS

/// Waits for the TLS handshake of a new `https://` connection to the upstream. The connection
/// counts as made only once the handshake has completed, so a failed one (a certificate that
/// does not verify, a refused handshake, one that stalls past the connect timeout) is "no
/// connection": nothing was sent, so the claim is released and the client gets 502, never a
/// request the upstream may have acted on. It also verifies the server name (see `UpstreamTLS`).
final class UpstreamHandshake: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let promise: EventLoopPromise<Void>
    private let timeout: TimeAmount
    private let serverName: String?
    private var timer: Scheduled<Void>?
    private var finished = false

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
        if case TLSUserEvent.handshakeCompleted = event {
            if let serverName, let names = dnsNames(context), !CertificateName.covers(serverName, dnsNames: names) {
                let named = names.isEmpty ? "no DNS name" : names.joined(separator: ", ")
                finish(.failure(UpstreamTLSError("the upstream's certificate is not for \(serverName) (it names \(named))")))
                context.close(promise: nil)
                return
            }
            finish(.success(()))
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(UpstreamTLSError("TLS handshake with the upstream failed: \(error)")))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(UpstreamTLSError("the upstream closed the connection during the TLS handshake")))
        context.fireChannelInactive()
    }

    /// The DNS names of the upstream's certificate; nil if there is no certificate to read,
    /// which the chain verification has already refused.
    private func dnsNames(_ context: ChannelHandlerContext) -> [String]? {
        guard let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self),
            let certificate = tls.peerCertificate
        else { return nil }
        return certificate._subjectAlternativeNames().compactMap { name in
            guard name.nameType == .dnsName else { return nil }
            return String(decoding: name.contents, as: UTF8.self)
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
