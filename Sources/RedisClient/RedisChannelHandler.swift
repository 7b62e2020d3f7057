import NIOCore

/// Completion of one command; always called on the connection's event loop.
public typealias RedisCompletion = (Result<RedisReply, RedisError>) -> Void

/// Pipelines commands over one channel: writes go out at once but are flushed once per
/// event-loop pass, replies are matched to commands in order.
///
/// A reply that does not come within the timeout means the connection can no longer be trusted
/// (a later reply could be matched to the wrong command), so every command in flight is failed
/// and the channel closed; the owning `RedisConnection` reconnects.
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        let deadline: NIODeadline
        let completion: RedisCompletion
    }

    private let reader = RESPReader()
    private let timeout: TimeAmount
    private var pending = CircularBuffer<Pending>(initialCapacity: 64)
    private var context: ChannelHandlerContext?
    private var flushScheduled = false
    private var timer: Scheduled<Void>?
    /// Set once the channel is failing; every later command fails with it.
    private var failure: RedisError?
    /// Told once, when the channel is gone.
    var onClose: ((RedisError) -> Void)?
    /// Set on a subscriber connection: replies that no command waits for (Pub/Sub messages,
    /// subscription notices) go here. Without it such a reply breaks the connection.
    var onPush: ((RedisReply) -> Void)?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    var isUsable: Bool { failure == nil && context != nil }

    /// Sends an already encoded command. Without a completion nothing waits for its reply
    /// (subscriber connections: the answers arrive through `onPush`).
    func send(_ command: ByteBuffer, completion: RedisCompletion?) {
        guard let context, failure == nil else {
            completion?(.failure(failure ?? .connectionClosed))
            return
        }
        if let completion {
            let deadline = context.eventLoop.now + timeout
            pending.append(Pending(deadline: deadline, completion: completion))
            if timer == nil { armTimer(at: deadline) }
        }
        context.write(wrapOutboundOut(command), promise: nil)
        if !flushScheduled {
            // Every command written during this event-loop pass leaves in one syscall.
            flushScheduled = true
            context.eventLoop.assumeIsolated().execute {
                self.flushScheduled = false
                self.context?.flush()
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try reader.feed(unwrapInboundIn(data))
            while let reply = try reader.next() {
                if let command = pending.popFirst() {
                    command.completion(.success(reply))
                } else if let onPush {
                    onPush(reply)
                } else {
                    throw RedisError.protocolError("a reply arrived with no command waiting for it")
                }
            }
        } catch let error as RedisError {
            fail(error, context: context)
        } catch {
            fail(.other("\(error)"), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = failure ?? .connectionClosed
        failAll(error)
        timer?.cancel()
        timer = nil
        self.context = nil
        let onClose = self.onClose
        self.onClose = nil
        onClose?(error)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(.io("\(error)"), context: context)
    }

    private func fail(_ error: RedisError, context: ChannelHandlerContext) {
        if failure == nil { failure = error }
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        if failure == nil { failure = error }
        // Completions may send new commands; they fail at once because `failure` is set.
        var failed = CircularBuffer<Pending>()
        swap(&failed, &pending)
        for command in failed { command.completion(.failure(error)) }
    }

    private func armTimer(at deadline: NIODeadline) {
        guard let context else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timer = nil
            guard let head = self.pending.first, let context = self.context else { return }
            if head.deadline <= context.eventLoop.now {
                self.fail(.timeout, context: context)
            } else {
                self.armTimer(at: head.deadline)
            }
        }
    }
}
