import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import RedisClient
@testable import TestSupport

@Suite struct RedisSubscriberTests {
    /// A server that refuses subscriptions (here an ACL without SUBSCRIBE; before Redis 7 a
    /// cluster has no SSUBSCRIBE) is reported once, however many channels it refuses.
    @Test func aRefusedSubscriptionIsReportedOnce() async throws {
        let redis = try RedisServerProcess()
        let admin = try await TestRedisClient(port: redis.port)
        defer { Task { await admin.close() } }
        let user: [RedisArgument] = ["ACL", "SETUSER", "waiter", "on", ">pw", "~*", "&*", "+@all", "-subscribe"]
        #expect(try await admin.send(user) == .status("OK"))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let refusals = NIOLockedValueBox<[String]>([])
        let subscriber = try await loop.submit {
            let configuration = RedisConfiguration(
                address: .tcp(host: "127.0.0.1", port: redis.port), username: "waiter", password: "pw",
                commandTimeout: .seconds(1))
            let subscriber = RedisSubscriber(configuration: configuration, eventLoop: loop)
            subscriber.onRefused = { error in refusals.withLockedValue { $0.append(error) } }
            for channel in ["a", "b", "c"] { _ = subscriber.subscribe(channel) {} }
            return NIOLoopBound(subscriber, eventLoop: loop)
        }.get()
        for _ in 0..<500 where refusals.withLockedValue({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(20)) }
        try await Task.sleep(for: .milliseconds(100))  // room for the other two refusals
        let told = refusals.withLockedValue { $0 }
        #expect(told.count == 1)
        #expect(told.first?.hasPrefix("NOPERM") == true, "\(told)")
        try await loop.submit { subscriber.value.close() }.get()
        try await group.shutdownGracefully()
    }
}
