import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One simulated client. It keeps a keep-alive connection for as long as it can and opens a
/// new one after it dropped a response on purpose, the server closed, or the network failed.
struct LoadClient {
    typealias Connection = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    /// The key being worked on, across attempts and connections.
    private struct Job {
        let key: String
        let body: [UInt8]
        var ledger = KeyLedger()
        var nextAttempt = 0
    }

    let options: LoadOptions
    let group: any EventLoopGroup
    let worker: Int

    /// Works through keys from `counter` until none are left.
    func run(counter: KeyCounter, runID: String) async -> [(KeyLedger, UInt64?)] {
        var results: [(KeyLedger, UInt64?)] = []
        var job: Job?
        // A cancelled run (a test past its time limit) ends: its sleeps would throw at once.
        while !Task.isCancelled {
            if job == nil {
                guard let index = await counter.next() else { break }
                job = Job(key: "load-\(runID)-\(index)", body: LoadRunner.body(index: index, size: options.bodyBytes))
            }
            do {
                let target = options.target(forAttempt: job!.nextAttempt)
                let connection: Connection
                do {
                    connection = try await connect(target)
                } catch {
                    // No attempt was made, so none counts (a restarting target is waited for),
                    // but the next try waits as a retry would: a target that refuses is not
                    // hammered.
                    job!.ledger.failed()
                    try? await Task.sleep(for: .microseconds(Int64(options.backoff.delayMs(retry: max(job!.nextAttempt, 1), unit: .random(in: 0...1)) * 1_000)))
                    continue
                }
                try await connection.executeThenClose { inbound, outbound in
                    var responses = inbound.makeAsyncIterator()
                    // Attempts run on this connection until one is lost or the server closes.
                    while var current = job {
                        let outcome: AttemptOutcome
                        do {
                            outcome = try await attempt(&current, target: target, responses: &responses, outbound: outbound)
                        } catch {
                            // The attempt counted (and its ledger entry) stands: without it a key
                            // that always fails would be retried forever, without backoff.
                            job = current
                            throw error
                        }
                        job = current
                        switch outcome {
                        case .finished(let latency):
                            results.append((current.ledger, latency))
                            await counter.finished()
                            job = nil
                            guard let index = await counter.next() else { return }
                            job = Job(key: "load-\(runID)-\(index)", body: LoadRunner.body(index: index, size: options.bodyBytes))
                        case .gaveUp:
                            results.append((current.ledger, nil))
                            await counter.finished()
                            job = nil
                            return
                        case .retry:
                            continue
                        case .reconnect:
                            return
                        }
                    }
                }
            } catch {
                if var current = job {
                    current.ledger.failed()
                    job = current
                    if current.nextAttempt > options.maxRetries {
                        results.append((current.ledger, nil))
                        await counter.finished()
                        job = nil
                    }
                }
            }
        }
        // Cancelled mid-key: the key is reported unanswered, with what its attempts met.
        if let job { results.append((job.ledger, nil)) }
        return results
    }

    private enum AttemptOutcome {
        case finished(latencyMicros: UInt64)
        case gaveUp
        /// Retry on the same connection.
        case retry
        /// Retry on a new connection (this one was dropped on purpose or closed by the server).
        case reconnect
    }

    private func attempt(
        _ job: inout Job,
        target: HTTPTarget,
        responses: inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    ) async throws -> AttemptOutcome {
        guard job.nextAttempt <= options.maxRetries else { return .gaveUp }
        if job.nextAttempt > 0 {
            let delay = options.backoff.delayMs(retry: job.nextAttempt, unit: Double.random(in: 0...1))
            try await Task.sleep(for: .microseconds(Int64(delay * 1_000)))
        }
        job.nextAttempt += 1
        job.ledger.attemptStarted()
        let clock = ContinuousClock()
        let start = clock.now
        try await outbound.write(contentsOf: request(target, key: job.key, body: job.body))
        if Double.random(in: 0..<1) < options.loseRate {
            // The response is "lost": drop the connection at a random moment after sending.
            job.ledger.lost()
            try await Task.sleep(for: .microseconds(Int64(Double.random(in: 0...options.loseWindowMs) * 1_000)))
            return .reconnect
        }
        let (answer, keepAlive) = try await Self.readResponse(&responses)
        job.ledger.answered(answer)
        if job.ledger.isDone {
            let elapsed = clock.now - start
            let micros = UInt64(elapsed.components.seconds) * 1_000_000 + UInt64(elapsed.components.attoseconds / 1_000_000_000_000)
            return .finished(latencyMicros: micros)
        }
        return keepAlive ? .retry : .reconnect
    }

    /// One GET on its own connection, for `/stats`.
    func get(_ target: HTTPTarget) async throws -> KeyLedger.Answer {
        let connection = try await connect(target)
        return try await connection.executeThenClose { inbound, outbound in
            var responses = inbound.makeAsyncIterator()
            try await outbound.write(contentsOf: request(target, method: .GET, key: nil, body: []))
            return try await Self.readResponse(&responses).0
        }
    }

    private func request(_ target: HTTPTarget, method: HTTPMethod = .POST, key: String?, body: [UInt8]) -> [HTTPClientRequestPart] {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(target.host):\(target.port)")
        if let key {
            headers.add(name: "Idempotency-Key", value: "\"\(key)\"")
            headers.add(name: "Authorization", value: "Bearer load-client-\(worker)")
            headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        }
        headers.add(name: "Content-Length", value: String(body.count))
        return [
            .head(HTTPRequestHead(version: .http1_1, method: method, uri: target.path, headers: headers)),
            .body(.byteBuffer(ByteBuffer(bytes: body))),
            .end(nil),
        ]
    }

    private static func readResponse(
        _ responses: inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    ) async throws -> (KeyLedger.Answer, keepAlive: Bool) {
        var status = 0
        var replayed = false
        var keepAlive = true
        var body: [UInt8] = []
        while let part = try await responses.next() {
            switch part {
            case .head(let head):
                status = Int(head.status.code)
                replayed = head.headers["Idempotent-Replayed"].first == "true"
                keepAlive = head.isKeepAlive
            case .body(let buffer):
                body += buffer.readableBytesView
            case .end:
                return (KeyLedger.Answer(status: status, body: body, replayed: replayed), keepAlive)
            }
        }
        throw LoadError("connection closed before the response ended")
    }

    private func connect(_ target: HTTPTarget) async throws -> Connection {
        var tls: (NIOSSLContext, String?)?
        if target.tls {
            guard let context = options.tls else { throw LoadError("an https:// target needs a TLS context") }
            tls = (context, (try? SocketAddress(ipAddress: target.host, port: 0)) == nil ? target.host : nil)
        }
        return try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .connect(host: target.host, port: target.port) { [tls] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let (context, name) = tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: name))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
    }
}
