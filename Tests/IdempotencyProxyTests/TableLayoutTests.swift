import Foundation
import IdempotencyCore
import TestSupport
import Testing

@testable import IdempotencyProxy

/// The long-term store's table across versions (docs/behaviour.md §3, long-term store): a table
/// made before `sweep_after` existed is used as it is, and upgrades as `config/postgres.sql`
/// says, with the proxies running.
@Suite struct TableLayoutTests {
    /// The table of the versions before `sweep_after`, as they created it.
    static let earlierTable = [
        """
        CREATE TABLE $TABLE (record_key text PRIMARY KEY, owner bytea NOT NULL, fingerprint bytea NOT NULL, record bytea,
            expires_at timestamptz NOT NULL)
        """,
        "CREATE INDEX $TABLE_expires_at ON $TABLE (expires_at)",
    ]

    @Test func aTableOfAnEarlierVersionIsUsedAsItIsAndUpgradesAsConfigPostgresSQLSays() async throws {
        let table = TestTable()
        let prefix = "upgrade-\(table.name):"
        for statement in Self.earlierTable { try await table.query(statement) }
        try await withProxy(table.settings(), prefix: prefix, sweepInterval: .milliseconds(200)) { h in
            try await h.expectReplayedFromPostgres()
            try await expectExpiredRowsSwept(table)
        }
        #expect(try await table.integer("SELECT count(*) FROM pg_attribute WHERE attrelid = '$TABLE'::regclass AND attname = 'sweep_after'") == 0,
            "the proxy leaves the table as it is")

        // A row the earlier version wrote, live when the table is upgraded.
        try await table.query("""
            INSERT INTO $TABLE (record_key, owner, fingerprint, record, expires_at)
            VALUES ('earlier', decode('01', 'hex'), decode('00', 'hex'), NULL, now() + interval '1 hour')
            """)
        let upgrade = try Self.upgradeStatements().map { $0.replacingOccurrences(of: "idempotency_records", with: "$TABLE") }
        #expect(upgrade.count == 8, "\(upgrade)")
        let indexBuilt = try #require(upgrade.firstIndex { $0.hasPrefix("CREATE INDEX CONCURRENTLY") })
        let update = try #require(upgrade.first { $0.hasPrefix("UPDATE") })
        for statement in upgrade[..<indexBuilt] { try await table.query(statement) }
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'earlier' AND sweep_after = expires_at") == 1)

        // A proxy started halfway, the column there but not its index, uses the table as it is
        // and builds nothing on it.
        try await withProxy(table.settings(), prefix: prefix, sweepInterval: .milliseconds(200)) { h in
            #expect(try await h.send("POST", "/charges", key: "halfway", body: "x").status == 201)
            try await expectExpiredRowsSwept(table)
        }
        #expect(try await table.indexes(on: "sweep_after") == 0)
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE sweep_after = 'epoch' AND record IS NOT NULL") >= 1,
            "the earlier statements, which leave sweep_after to its default")

        for statement in upgrade[indexBuilt...] { try await table.query(statement) }
        try await table.query(update)
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE sweep_after < expires_at") == 0)
        #expect(try await table.indexes(on: "sweep_after") == 1)
        #expect(try await table.indexes(on: "expires_at") == 0)
        #expect(try await table.fillfactor() == 70)

        try await withProxy(table.settings(), prefix: prefix, sweepInterval: .milliseconds(200)) { h in
            // What the table held before is still replayed.
            try await h.forgetRedisRecords()
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            try await h.expectCompletionsWrittenInPlace(table)
            try await expectExpiredRowsSwept(table)
        }
    }

    /// An expired row (without `sweep_after`, as an earlier version writes it) is deleted by the
    /// sweep, and a live one is kept.
    private func expectExpiredRowsSwept(_ table: TestTable) async throws {
        try await table.query("""
            INSERT INTO $TABLE (record_key, owner, fingerprint, record, expires_at)
            VALUES ('expired', decode('01', 'hex'), decode('00', 'hex'), NULL, now() - interval '1 second')
            """)
        let left = try await retrying(times: 100, pause: .milliseconds(100), while: { $0 > 0 }) {
            try await table.integer("SELECT count(*) FROM $TABLE WHERE record_key = 'expired'")
        }
        #expect(left == 0, "swept")
        #expect(try await table.integer("SELECT count(*) FROM $TABLE WHERE record IS NOT NULL") >= 1, "live records kept")
    }

    /// The statements `config/postgres.sql` gives for the upgrade, in its comments, in order.
    static func upgradeStatements() throws -> [String] {
        try String(contentsOfFile: "config/postgres.sql", encoding: .utf8).split(separator: "\n")
            .filter { $0.hasPrefix("--   ") && $0.dropFirst(5).first?.isUppercase == true }
            .map { $0.dropFirst(5).trimmingCharacters(in: .whitespaces) }
            .map { $0.hasSuffix(";") ? String($0.dropLast()) : $0 }
    }
}

extension TestTable {
    /// How many indexes of the table lead with `column`.
    func indexes(on column: String) async throws -> Int {
        try await integer("SELECT count(*) FROM pg_indexes WHERE tablename = '\(name)' AND indexdef LIKE '%(\(column))%'")
    }

    /// The table's fillfactor, 100 when not set.
    func fillfactor() async throws -> Int {
        try await integer("""
            SELECT coalesce((SELECT substr(o, 12)::int8 FROM unnest(reloptions) o WHERE o LIKE 'fillfactor=%'), 100)
            FROM pg_class WHERE oid = '$TABLE'::regclass
            """)
    }
}

extension ProxyHarness {
    /// First-time requests complete with HOT updates (written in place, no new index entry),
    /// as the server's statistics count them: a completion that changes an indexed column
    /// makes none. An idle server process reports its counts within about 10 s.
    func expectCompletionsWrittenInPlace(_ table: TestTable, count: Int = 20) async throws {
        let updates = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = '$TABLE'::regclass"
        func counted() async throws -> (all: Int64, hot: Int64) {
            try await table.query(updates).first?.decode((Int64, Int64).self) ?? (0, 0)
        }
        let before = try await counted()
        for i in 0..<count {
            #expect(try await send("POST", "/charges", key: "in-place-\(i)", body: "x").status == 201)
        }
        let after = try await retrying(times: 200, pause: .milliseconds(100), while: { $0.all - before.all < count }) {
            try await counted()
        }
        let (all, hot) = (after.all - before.all, after.hot - before.hot)
        #expect(all >= count, "the completions were counted")
        // Room in a page runs out now and then, before the server prunes it.
        #expect(hot >= all * 3 / 4, "\(hot) of \(all) updates were HOT")
    }
}
