import IdempotencyCore
import IdempotencyScripts
import NIOCore
import NIOPosix
import NIOSSL
import RedisClient

#if canImport(Glibc)
import Glibc
#endif

/// Claims per second through our RedisClient over one connection, with a fixed number of
/// commands kept in flight (closed loop). Used by `scripts/bench-redis`.
///
///     redis-claim-bench PORT SECONDS INFLIGHT...
///
/// With `REDIS_TLS_CA=FILE` in the environment it speaks TLS (`rediss://`), verifying the
/// server against that CA.
@main
struct RedisClaimBench {
    static func main() async throws {
        let args = CommandLine.arguments.dropFirst().compactMap { Int($0) }
        guard args.count >= 3 else {
            print("usage: redis-claim-bench PORT SECONDS INFLIGHT...")
            exit(2)
        }
        let (port, seconds, depths) = (args[0], args[1], Array(args[2...]))
        var configuration = RedisConfiguration(address: .tcp(host: "127.0.0.1", port: port))
        if let ca = getenv("REDIS_TLS_CA").map({ String(cString: $0) }) {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            configuration.tls = RedisTLS(context: try NIOSSLContext(configuration: tls))
        }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let connection = try await loop.submit { [configuration] in
            NIOLoopBound(RedisConnection(configuration: configuration, eventLoop: loop), eventLoop: loop)
        }.get()
        // A realistic in-flight record: version, state, owner, fingerprint.
        let record = IdempotencyRecord(
            owner: [UInt8](repeating: 7, count: 16), fingerprint: [UInt8](repeating: 9, count: 32), state: .inFlight
        ).encoded()
        for depth in depths {
            let rate = try await loop.flatSubmit {
                run(connection.value, record: record, depth: depth, seconds: seconds, loop: loop)
            }.get()
            print("inflight=\(depth) claims_per_second=\(Int(rate))")
        }
    }

    /// Keeps `depth` claims in flight for `seconds`, each on a fresh key; returns claims/s.
    static func run(_ redis: RedisConnection, record: [UInt8], depth: Int, seconds: Int, loop: any EventLoop)
        -> EventLoopFuture<Double>
    {
        let promise = loop.makePromise(of: Double.self)
        let start = NIODeadline.now()
        let end = start + .seconds(Int64(seconds))
        var done = 0
        var active = depth
        var next = Int.random(in: 0..<1_000_000_000) * 1_000
        var failed = false
        // An hour from now, in ms since the epoch: every claim is in time.
        let deadline = RedisArgument.string(String((Int64(time(nil)) + 3_600) * 1_000))
        func issue() {
            next += 1
            redis.run(.claim, keys: [.string("bench:\(next)")], arguments: [.bytes(record), "60000", deadline]) { result in
                if case .failure = result { failed = true }
                if case .success(.error) = result { failed = true }
                done += 1
                if NIODeadline.now() < end && !failed {
                    issue()
                } else {
                    active -= 1
                    if active == 0 {
                        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
                        if failed { promise.fail(RedisError.other("a claim failed")) } else { promise.succeed(Double(done) / elapsed) }
                    }
                }
            }
        }
        for _ in 0..<depth { issue() }
        return promise.futureResult
    }
}
