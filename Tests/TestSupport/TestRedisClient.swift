import NIOCore
import NIOPosix
import RedisClient

/// A `RedisConnection` on its own event loop, driven from async tests.
public final class TestRedisClient: Sendable {
    public let loop: any EventLoop
    private let group: MultiThreadedEventLoopGroup
    private let connection: NIOLoopBound<RedisConnection>

    public init(_ configuration: RedisConfiguration) async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        self.loop = loop
        connection = try await loop.submit {
            NIOLoopBound(RedisConnection(configuration: configuration, eventLoop: loop), eventLoop: loop)
        }.get()
    }

    /// The default timeout is long: the tests look into Redis while the whole suite loads the
    /// machine; a test of a timeout sets its own.
    public convenience init(port: Int, timeout: TimeAmount = .seconds(10)) async throws {
        try await self.init(RedisConfiguration(address: .tcp(host: "127.0.0.1", port: port), commandTimeout: timeout))
    }

    public func send(_ arguments: [RedisArgument]) async throws -> RedisReply {
        try await loop.flatSubmit { self.connection.value.send(arguments) }.get()
    }

    /// Sends one command, and says how long its answer took as the connection's loop saw it:
    /// a test's own task can resume seconds later on a machine the whole suite loads.
    public func timedSend(_ arguments: [RedisArgument]) async throws -> (result: Result<RedisReply, RedisError>, took: TimeAmount) {
        try await loop.flatSubmit {
            let promise = self.loop.makePromise(of: (result: Result<RedisReply, RedisError>, took: TimeAmount).self)
            let start = NIODeadline.now()
            self.connection.value.send(arguments) { promise.succeed(($0, NIODeadline.now() - start)) }
            return promise.futureResult
        }.get()
    }

    /// Sends all commands in one event-loop pass (one flush) and collects the replies in order.
    public func pipeline(_ commands: [[RedisArgument]]) async throws -> [Result<RedisReply, RedisError>] {
        try await loop.flatSubmit {
            let promise = self.loop.makePromise(of: [Result<RedisReply, RedisError>].self)
            var results = [Result<RedisReply, RedisError>?](repeating: nil, count: commands.count)
            var remaining = commands.count
            for (index, command) in commands.enumerated() {
                self.connection.value.send(command) { result in
                    results[index] = result
                    remaining -= 1
                    if remaining == 0 { promise.succeed(results.map { $0! }) }
                }
            }
            if commands.isEmpty { promise.succeed([]) }
            return promise.futureResult
        }.get()
    }

    public func run(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument]) async throws -> RedisReply {
        try await loop.flatSubmit {
            let promise = self.loop.makePromise(of: RedisReply.self)
            self.connection.value.run(script, keys: keys, arguments: arguments) { promise.completeWith($0.mapError { $0 }) }
            return promise.futureResult
        }.get()
    }

    /// How often the server ran `command` (`INFO commandstats`; calls made by scripts count),
    /// or another of its counts (`rejected_calls`: refused before running, e.g. by an ACL).
    public func calls(of command: String, count: String = "calls") async throws -> Int {
        let stats = try await send(["INFO", "commandstats"]).string ?? ""
        // cmdstat_publish:calls=N,usec=…,rejected_calls=N,failed_calls=N
        let line = stats.split(separator: "\r\n").first { $0.hasPrefix("cmdstat_\(command.lowercased()):") } ?? ""
        let fields = line.split(separator: ":").last?.split(separator: ",") ?? []
        let field = fields.first { $0.hasPrefix("\(count)=") }
        return field.flatMap { Int($0.dropFirst(count.count + 1)) } ?? 0
    }

    /// Retries a PING until it succeeds or `seconds` pass; returns how long it took.
    public func waitUntilReady(seconds: Double = 5) async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        while clock.now - start < .seconds(seconds) {
            if case .status("PONG")? = try? await send(["PING"]) { return clock.now - start }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSupportErrorRedis.notReady
    }

    public func close() async {
        try? await loop.submit { self.connection.value.close() }.get()
        try? await group.shutdownGracefully()
    }
}

enum TestSupportErrorRedis: Error { case notReady }
