import NIOCore
import NIOSSL
import NIOPosix

/// A pipelined connection to one Redis server that stays confined to one event loop.
///
/// It connects on creation and reconnects by itself: after a loss it waits a capped, jittered
/// backoff (25 ms doubling up to 1 s) and tries again, running AUTH and SELECT each time. A
/// command that finds no connection waits for one, for at most the command timeout, and brings
/// the next attempt forward to within half that timeout of the last one (see
/// `bringReconnectForward`), so that a failed command means that Redis did not answer in time,
/// not that the backoff had not run out. An attempt that fails fails the commands waiting for
/// it. Every method must be called on `eventLoop`.
public final class RedisConnection {
    public let eventLoop: any EventLoop
    private let configuration: RedisConfiguration

    private enum State {
        case connecting
        case ready(RedisChannelHandler, any Channel)
        case waitingToReconnect(RedisError)
        case closed
    }

    /// A command sent while there is no connection, with the time its answer is due.
    private struct Waiting {
        let command: ByteBuffer
        let deadline: NIODeadline
        let completion: RedisCompletion
    }

    private var state: State = .waitingToReconnect(.notConnected("not started"))
    /// Commands waiting for the connection (empty while ready); failed at their deadline.
    private var waiting = CircularBuffer<Waiting>()
    private var waitingTimer: Scheduled<Void>?
    /// The next attempt, and when it is due.
    private var reconnect: (task: Scheduled<Void>, due: NIODeadline)?
    private var lastAttempt = NIODeadline.distantPast
    private var failedAttempts = 0
    private let allocator = ByteBufferAllocator()
    private let onPush: ((RedisReply) -> Void)?
    /// Called each time a connection is (re)established, before queued commands are released.
    public var onReady: (() -> Void)?
    /// Called when the connection goes from usable to unusable or back (not on every failed
    /// reconnect attempt), so that an operator sees one line per outage.
    public var onAvailabilityChange: ((_ server: String, _ available: Bool, _ error: RedisError?) -> Void)?
    private var wasAvailable: Bool?

    /// Creates the connection and starts connecting. Call on `eventLoop`. With `onPush`, the
    /// connection is a Pub/Sub subscriber: it sends with `sendUnanswered`, and the replies to
    /// those commands, the messages and the server's own notices are handed there.
    public init(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        onPush: ((RedisReply) -> Void)? = nil
    ) {
        eventLoop.preconditionInEventLoop()
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.onPush = onPush
        connect()
    }

    /// Sends a command of a subscriber connection; its reply goes to `onPush`. Dropped while
    /// not connected: subscriptions are made again in `onReady`.
    public func sendUnanswered(_ arguments: [RedisArgument]) {
        guard case .ready(let handler, _) = state else { return }
        handler.send(encode(arguments), completion: nil)
    }

    /// Sends one command; `completion` runs on the event loop with the reply.
    public func send(_ arguments: [RedisArgument], completion: @escaping RedisCompletion) {
        send(encoded: encode(arguments), completion: completion)
    }

    /// Sends one command and returns its reply as a future; for callers outside the hot path.
    public func send(_ arguments: [RedisArgument]) -> EventLoopFuture<RedisReply> {
        let promise = eventLoop.makePromise(of: RedisReply.self)
        send(arguments) { promise.completeWith($0.mapError { $0 as Error }) }
        return promise.futureResult
    }

    /// Runs a script by its SHA-1; when the server does not know it (a restart, `SCRIPT FLUSH`),
    /// runs it again with `EVAL`, which also caches it for the next `EVALSHA`.
    public func run(
        _ script: RedisScript,
        keys: [RedisArgument],
        arguments: [RedisArgument],
        completion: @escaping RedisCompletion
    ) {
        run(script, keys: keys, arguments: arguments, asking: false, completion: completion)
    }

    /// `asking`: each try goes right after `ASKING`, which holds for one command (Redis
    /// Cluster, a slot being migrated to this node).
    func run(
        _ script: RedisScript,
        keys: [RedisArgument],
        arguments: [RedisArgument],
        asking: Bool,
        completion: @escaping RedisCompletion
    ) {
        // One array for the command: this runs for every protected request.
        var command: [RedisArgument] = []
        command.reserveCapacity(3 + keys.count + arguments.count)
        command.append("EVALSHA")
        command.append(.string(script.sha1))
        command.append(RedisArgument(keys.count))
        command += keys
        command += arguments
        if asking { send(["ASKING"]) { _ in } }
        send(command) { [command] result in
            if case .success(.error(let message)) = result, message.hasPrefix("NOSCRIPT") {
                if asking { self.send(["ASKING"]) { _ in } }
                var again = command
                again[0] = "EVAL"
                again[1] = .string(script.source)
                self.send(again, completion: completion)
            } else {
                completion(result)
            }
        }
    }

    /// Closes the connection for good; commands sent afterwards fail.
    public func close() {
        let previous = state
        state = .closed
        reconnect?.task.cancel()
        failWaiting(.notConnected("closed"))
        if case .ready(_, let channel) = previous { channel.close(promise: nil) }
    }

    private func send(encoded buffer: ByteBuffer, completion: @escaping RedisCompletion) {
        switch state {
        case .ready(let handler, _):
            handler.send(buffer, completion: completion)
        case .connecting:
            wait(buffer, completion: completion)
        case .waitingToReconnect:
            wait(buffer, completion: completion)
            bringReconnectForward()
        case .closed:
            completion(.failure(.notConnected("the connection was closed")))
        }
    }

    private func encode(_ arguments: [RedisArgument]) -> ByteBuffer {
        // Room for each argument and its `$<length>` line: no reallocation while it is written.
        var buffer = allocator.buffer(capacity: arguments.reduce(16) { $0 + $1.count + 16 })
        RESPFormatter.write(arguments, into: &buffer)
        return buffer
    }

    // MARK: - waiting for a connection

    private static let noConnectionInTime = RedisError.notConnected("no connection to Redis within the command timeout")

    private func wait(_ command: ByteBuffer, completion: @escaping RedisCompletion) {
        let deadline = NIODeadline.now() + configuration.commandTimeout
        waiting.append(Waiting(command: command, deadline: deadline, completion: completion))
        if waitingTimer == nil { armWaitingTimer(at: deadline) }
    }

    private func armWaitingTimer(at deadline: NIODeadline) {
        waitingTimer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.waitingTimer = nil
            let now = NIODeadline.now()
            while let first = self.waiting.first, first.deadline <= now {
                self.waiting.removeFirst()
                first.completion(.failure(Self.noConnectionInTime))
            }
            if let first = self.waiting.first { self.armWaitingTimer(at: first.deadline) }
        }
    }

    private func failWaiting(_ error: RedisError) {
        waitingTimer?.cancel()
        waitingTimer = nil
        var failed = CircularBuffer<Waiting>()
        swap(&failed, &waiting)
        for command in failed { command.completion(.failure(error)) }
    }

    /// A waiting command wants a connection within its timeout: the next attempt comes at most
    /// half a command timeout (and at most the backoff) after the last one, or sooner if the
    /// backoff already has it sooner. So a Redis that is down gets at most two connects per
    /// command timeout from each connection, however many commands arrive, and one that is back
    /// is found while the commands still wait.
    private func bringReconnectForward() {
        let spacing = min(Self.backoff(afterFailures: failedAttempts), .nanoseconds(configuration.commandTimeout.nanoseconds / 2))
        let due = max(lastAttempt + spacing, .now())
        if let reconnect, reconnect.due <= due { return }
        scheduleReconnect(at: due)
    }

    private func scheduleReconnect(at due: NIODeadline) {
        reconnect?.task.cancel()
        let task = eventLoop.assumeIsolated().scheduleTask(deadline: due) {
            self.reconnect = nil
            if case .waitingToReconnect = self.state { self.connect() }
        }
        reconnect = (task, due)
    }

    // MARK: - connecting

    private func connect() {
        reconnect?.task.cancel()
        reconnect = nil
        lastAttempt = .now()
        state = .connecting
        let timeout = configuration.commandTimeout
        var tls: (RedisTLS, serverName: String?)?
        if let context = configuration.tls, case .tcp(let host, _) = configuration.address {
            // SNI takes a name only; an address is verified against the certificate's.
            tls = (context, (try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil)
        }
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { [tls] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let (context, serverName) = tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context.context, serverHostname: serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(timeout: timeout))
                }
            }
        let future: EventLoopFuture<any Channel>
        switch configuration.address {
        case .tcp(let host, let port):
            future = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host, port: port)
        case .unix(let path):
            future = bootstrap.connect(unixDomainSocketPath: path)
        }
        future.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                do {
                    let handler = try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self)
                    self.handshake(channel: channel, handler: handler)
                } catch {
                    channel.close(promise: nil)
                    self.connectionFailed(.io("\(error)"))
                }
            case .failure(let error):
                self.connectionFailed(.io("cannot connect to \(self.configuration.address): \(error)"))
            }
        }
    }

    /// AUTH and SELECT, pipelined, before any queued command is released. Over TLS there is
    /// always at least a PING: its answer proves the handshake completed, so a server whose
    /// certificate does not verify is a failed attempt (with the growing backoff), never a
    /// connection that comes up and drops at once.
    private func handshake(channel: any Channel, handler: RedisChannelHandler) {
        handler.onPush = onPush
        handler.onClose = { [weak handler] error in
            guard let handler else { return }
            self.channelClosed(handler: handler, error: error)
        }
        var steps: [(name: String, command: [RedisArgument])] = []
        if let password = configuration.password {
            let user: [RedisArgument] = configuration.username.map { [.string($0)] } ?? []
            steps.append(("AUTH", ["AUTH"] + user + [.string(password)]))
        }
        if configuration.database != 0 { steps.append(("SELECT", ["SELECT", RedisArgument(configuration.database)])) }
        if configuration.tls != nil && steps.isEmpty { steps.append(("PING", ["PING"])) }
        var remaining = steps.count
        var failed = false
        guard remaining > 0 else { return becomeReady(channel: channel, handler: handler) }
        for step in steps {
            handler.send(encode(step.command)) { result in
                guard !failed else { return }
                switch result {
                case .success(.error(let message)):
                    failed = true
                    self.connectionFailed(.server("\(step.name) failed: \(message)"))
                    channel.close(promise: nil)
                case .failure(let error):
                    failed = true
                    self.connectionFailed(error)
                    channel.close(promise: nil)
                case .success:
                    remaining -= 1
                    if remaining == 0 { self.becomeReady(channel: channel, handler: handler) }
                }
            }
        }
    }

    private func becomeReady(channel: any Channel, handler: RedisChannelHandler) {
        guard case .connecting = state else {
            channel.close(promise: nil)  // closed meanwhile
            return
        }
        failedAttempts = 0
        state = .ready(handler, channel)
        availability(true, nil)
        onReady?()
        releaseWaiting(to: handler)
    }

    /// Sends the commands that waited for this connection. Each still gets its answer by its
    /// own deadline, but the connection's health is judged by the full command timeout: a
    /// command that waited most of its time must not make the new connection look hung.
    private func releaseWaiting(to handler: RedisChannelHandler) {
        waitingTimer?.cancel()
        waitingTimer = nil
        let now = NIODeadline.now()
        while let command = waiting.popFirst() {
            guard command.deadline > now else {
                command.completion(.failure(Self.noConnectionInTime))
                continue
            }
            let answer = AnswerOnce(command.completion)
            let timer = eventLoop.assumeIsolated().scheduleTask(deadline: command.deadline) {
                answer.complete(.failure(.timeout))
            }
            handler.send(command.command) { result in
                timer.cancel()
                answer.complete(result)
            }
        }
    }

    private func connectionFailed(_ error: RedisError) {
        guard case .connecting = state else { return }
        state = .waitingToReconnect(error)
        availability(false, error)
        failWaiting(.notConnected(error.description))
        scheduleReconnect()
    }

    private func channelClosed(handler: RedisChannelHandler, error: RedisError) {
        guard case .ready(let current, _) = state, current === handler else { return }
        state = .waitingToReconnect(error)
        availability(false, error)
        scheduleReconnect()
    }

    private func availability(_ available: Bool, _ error: RedisError?) {
        guard wasAvailable != available else { return }
        wasAvailable = available
        onAvailabilityChange?(configuration.address.description, available, error)
    }

    private func scheduleReconnect() {
        let delay = Self.backoff(afterFailures: failedAttempts)
        failedAttempts += 1
        // Times a random 0.5–1.0 so that many proxies that lost the same Redis do not reconnect
        // in lockstep.
        scheduleReconnect(at: .now() + .nanoseconds(Int64(Double(delay.nanoseconds) * Double.random(in: 0.5...1.0))))
    }

    /// 25 ms doubling to a 1 s cap. The cap keeps recovery within ~1 s of Redis coming back even
    /// with no command waiting (docs/behaviour.md §3, rule 11 allows 5 s).
    static func backoff(afterFailures failures: Int) -> TimeAmount {
        .milliseconds(min(1_000, 25 << min(failures, 6)))
    }
}

/// A completion called at most once: by the reply or by the deadline, whichever comes first.
/// (The long-term store's statements use it too.)
public final class AnswerOnce<Value> {
    private var completion: ((Value) -> Void)?

    public init(_ completion: @escaping (Value) -> Void) { self.completion = completion }

    public func complete(_ result: Value) {
        let completion = self.completion
        self.completion = nil
        completion?(result)
    }
}
