import Foundation
import IdempotencyCore
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import RedisClient
import TestSupport
import Testing

@testable import IdempotencyProxy

/// How the proxy reaches the test PostgreSQL: directly, or through PgBouncer in transaction
/// mode with its default settings (docs/behaviour.md, "Production stacks").
enum PostgresPath: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case direct
    case pgbouncer

    var url: String {
        get throws {
            switch self {
            case .direct: return SharedPostgres.url
            case .pgbouncer:
                guard let url = SharedPgBouncer.url else { throw TestSupportError("PgBouncer (\(PgBouncerProcess.binary)) did not start") }
                return url
            }
        }
    }

    var testDescription: String { rawValue }
}

/// A table of its own in a real PostgreSQL for one test, and a way to look into it.
struct TestTable: Sendable {
    let name: String
    let url: String

    init(url: String = SharedPostgres.url, name: String? = nil) {
        self.name = name ?? "t_" + UUID().uuidString.prefix(8).lowercased()
        self.url = url
    }

    /// A connection of the test's own to `url`.
    static func connect(_ url: String) async throws -> PostgresConnection {
        let parsed = try PostgresURL.parse(url)
        let configuration = PostgresConnection.Configuration(
            host: parsed.address.host, port: parsed.address.port, username: parsed.username, password: parsed.password,
            database: parsed.database, tls: .disable)
        return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: Logger(label: "test-sql"))
    }

    /// The proxy settings that put this table behind Redis; `extra` adds to or overrides them.
    /// The timeout also bounds opening a connection, slow when the whole suite runs at once;
    /// the tests of the timeout itself set a short one.
    func settings(_ extra: [String: String] = [:]) -> [String: String] {
        ["postgres_url": url, "postgres_table": name, "postgres_timeout": "5s"].merging(extra) { $1 }
    }

    /// Runs `sql` (with `$TABLE` replaced by the table's name) on a connection of its own.
    @discardableResult
    func query(_ sql: String) async throws -> [PostgresRow] {
        let connection = try await Self.connect(url)
        do {
            let rows = try await connection.query(PostgresQuery(unsafeSQL: sql.replacingOccurrences(of: "$TABLE", with: name)), logger: Logger(label: "test-sql"))
            var all: [PostgresRow] = []
            for try await row in rows { all.append(row) }
            try await connection.close()
            return all
        } catch {
            try? await connection.close()
            throw TestSupportError(String(reflecting: error))
        }
    }

    /// One integer the query selects.
    func integer(_ sql: String) async throws -> Int {
        guard let row = try await query(sql).first else { return -1 }
        return Int(try row.decode(Int64.self))
    }

    func rowCount() async throws -> Int { try await integer("SELECT count(*) FROM $TABLE") }
}

extension ProxyHarness {
    /// A first request runs, Redis forgets it, and its retry is replayed from PostgreSQL.
    func expectReplayedFromPostgres() async throws {
        let first = try await send("POST", "/charges", key: "k", body: "x")
        #expect(first.status == 201)
        try await forgetRedisRecords()
        #expect(try await send("POST", "/charges", key: "k", body: "x").replayed, "replayed from PostgreSQL")
        #expect(upstream.executions("/charges") == 1)
    }

    /// Deletes every record this test's proxy wrote to Redis, as a Redis restart would.
    func forgetRedisRecords() async throws {
        let redis = try await TestRedisClient(port: Self.port(of: redisURL))
        guard case .array(let keys) = try await redis.send(["KEYS", .string(prefix + "*")]) else { return }
        for case .bulk(let key) in keys { _ = try await redis.send(["DEL", .bytes(Array(key.readableBytesView))]) }
        await redis.close()
    }

    /// The remaining life (PTTL, ms) of each record this test's proxy wrote to Redis.
    func redisTTLs() async throws -> [Int64] {
        let redis = try await TestRedisClient(port: Self.port(of: redisURL))
        var ttls: [Int64] = []
        if case .array(let keys) = try await redis.send(["KEYS", .string(prefix + "*")]) {
            for case .bulk(let key) in keys {
                if case .integer(let ttl) = try await redis.send(["PTTL", .bytes(Array(key.readableBytesView))]) { ttls.append(ttl) }
            }
        }
        await redis.close()
        return ttls
    }
}

extension TestTable {
    /// The store one event loop of a proxy on this table would use, on a loop of the shared group.
    func loopStore(connections: Int = PostgresWiring.connectionsPerLoop, metrics: ProxyMetrics) async throws
        -> (any EventLoop, NIOLoopBound<PostgresRecordStore>)
    {
        let wiring = try wiring()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let store = try await loop.submit {
            NIOLoopBound(wiring.store(on: loop, loop: 0, connections: connections, metrics: metrics, logger: Logger(label: "test")), eventLoop: loop)
        }.get()
        return (loop, store)
    }

    /// The stores of two event loops of one proxy on this table (a pair), taking turns through `turn`.
    func loopStores(turn: CommitTurn, settings extra: [String: String] = [:], metrics: ProxyMetrics) async throws
        -> [(any EventLoop, NIOLoopBound<PostgresRecordStore>)]
    {
        let wiring = try wiring(extra, turn: turn)
        var stores: [(any EventLoop, NIOLoopBound<PostgresRecordStore>)] = []
        for index in 0..<PostgresWiring.loopsPerTurn {
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            stores.append((loop, try await loop.submit { [wiring] in
                NIOLoopBound(wiring.store(on: loop, loop: index, metrics: metrics, logger: Logger(label: "test")), eventLoop: loop)
            }.get()))
        }
        return stores
    }

    private func wiring(_ extra: [String: String] = [:], turn: CommitTurn = CommitTurn()) throws -> PostgresWiring {
        var loader = ConfigLoader()
        for (key, value) in settings(extra) { loader.applySet("\(key)=\(value)") }
        let configuration = try loader.finish().get()
        return PostgresWiring(url: configuration.postgresURL!, tls: .disable, configuration: configuration, turns: [turn])
    }
}
