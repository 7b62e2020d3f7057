import Testing

@testable import IdempotencyCore

/// Which client connections are closed at `max_connections`, without sockets.
@Suite struct ConnectionSheddingTests {
    static let s: UInt64 = 1_000_000_000

    struct Row: Sendable, CustomTestStringConvertible {
        let rule: String
        let connections: [ConnectionShedding.Activity]
        let now: UInt64
        let victims: [Int]
        var testDescription: String { rule }
    }

    @Test(arguments: [
        Row(rule: "a busy connection is never shed", connections: [.busy], now: 100 * s, victims: []),
        Row(rule: "an idle connection past the grace is shed", connections: [.idle(since: 0)], now: s, victims: [0]),
        Row(rule: "an idle connection within the grace is spared (a client about to send)", connections: [.idle(since: 0)], now: s - 1, victims: []),
        Row(rule: "a head trickling past the grace is shed", connections: [.readingHead(since: 2 * s)], now: 3 * s, victims: [0]),
        Row(rule: "a head that just started is spared", connections: [.readingHead(since: 2 * s)], now: 2 * s + s / 2, victims: []),
        Row(
            rule: "idle connections go first, then trickling heads, each oldest first",
            connections: [.readingHead(since: 1 * s), .busy, .idle(since: 5 * s), .readingHead(since: 0), .idle(since: 2 * s)],
            now: 10 * s, victims: [4, 2, 3, 0]),
    ])
    func victims(_ row: Row) {
        #expect(ConnectionShedding.victims(row.connections, now: row.now) == row.victims)
    }

    @Test(arguments: [(1_024, 480), (20_000, 9_968), (65, 1), (10, 1)] as [(Int, Int)])
    func theDefaultCapLeavesAReserveAndADescriptorPerUpstreamConnection(limit: Int, cap: Int) {
        #expect(ConnectionShedding.defaultMaxConnections(descriptorLimit: limit) == cap)
    }
}
