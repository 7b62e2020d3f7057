import Logging
import NIOConcurrencyHelpers
import NIOCore
import IdempotencyCore
import PostgresNIO

/// Makes sure the table exists and has the columns the statements need (docs/behaviour.md §3, long-term store), once per
/// process: at start when PostgreSQL answers then, else on the first connection that opens.
/// Only what is missing is created, so a role with no more than the rights
/// `config/postgres.sql` names can use a table an operator made.
final class PostgresSchema: Sendable {
    /// The statements for the table as checked, once it has been.
    private let checked = NIOLockedValueBox<PostgresSQL?>(nil)

    /// The statements for the table found: a table made by an earlier version, without
    /// `sweep_after`, is used as it is. An unusable table fails with `.unusableTable`, naming it.
    func ensure(on connection: PostgresConnection, sql configured: PostgresSQL, logger: Logger) -> EventLoopFuture<PostgresSQL> {
        if let sql = checked.withLockedValue({ $0 }) { return connection.eventLoop.makeSucceededFuture(sql) }
        let table = configured.table
        @Sendable func ask(_ query: String) -> EventLoopFuture<Bool> {
            connection.query(PostgresQuery(unsafeSQL: query), logger: logger).flatMapThrowing { result in
                try result.rows.first?.decode(Bool.self) ?? false
            }
        }
        @Sendable func names(_ query: String) -> EventLoopFuture<[String]> {
            connection.query(PostgresQuery(unsafeSQL: query), logger: logger).flatMapThrowing { result in
                try result.rows.map { try $0.decode(String.self) }
            }
        }
        @Sendable func create(_ statement: String) -> EventLoopFuture<Void> {
            connection.query(PostgresQuery(unsafeSQL: statement), logger: logger).map { _ in }
                .flatMapErrorThrowing { error in
                    // Another proxy creating the same table or index at the same moment.
                    if case .server(let state, _) = LongTermStoreError(error), ["23505", "42P07"].contains(state) { return }
                    throw Self.unusable(table, LongTermStoreError(error))
                }
        }
        return ask(configured.tableExists).flatMap { exists in
            exists ? connection.eventLoop.makeSucceededVoidFuture() : create(configured.createTable)
        }.flatMap {
            connection.query(PostgresQuery(unsafeSQL: configured.columnsQuery), logger: logger)
        }.flatMapThrowing { result in
            var found: [String: String] = [:]
            for row in result.rows {
                let (name, type) = try row.decode((String, String).self)
                found[name] = type
            }
            let sweepAfter = PostgresSQL.sweepAfterColumn
            var wrong = PostgresSQL.columns.filter { found[$0.name] != $0.type }
            if let type = found[sweepAfter.name], type != sweepAfter.type { wrong.append(sweepAfter) }
            guard wrong.isEmpty else {
                let wanted = wrong.map { "\($0.name) \($0.type)" }.joined(separator: ", ")
                throw LongTermStoreError.unusableTable(
                    "PostgreSQL table \(table) cannot be used: it lacks the columns \(wanted) (config/postgres.sql has the schema)")
            }
            var sql = configured
            sql.hasSweepAfter = found[sweepAfter.name] != nil
            if !sql.hasSweepAfter {
                logger.warning(
                    "PostgreSQL table \(table) has no sweep_after column (an earlier version made it): every completion writes a new index entry; config/postgres.sql says how to add the column")
            }
            return sql
        }.flatMap { sql in
            names(sql.indexes(leadingWith: sql.sweepColumn)).flatMap { indexes in
                guard indexes.isEmpty else { return connection.eventLoop.makeSucceededVoidFuture() }
                return create(sql.createIndex).flatMapErrorThrowing { error in
                    // Usable without it; only the sweep gets slow.
                    logger.warning(
                        "PostgreSQL table \(table) has no index on \(sql.sweepColumn) and the proxy cannot make one; the sweep of expired rows scans the table",
                        metadata: ["error": "\(error)"])
                }
            }.flatMap {
                sql.hasSweepAfter ? names(sql.indexes(leadingWith: "expires_at")) : connection.eventLoop.makeSucceededFuture([])
            }.flatMap { expiryIndexes in
                if !expiryIndexes.isEmpty {
                    logger.warning(
                        "PostgreSQL table \(table) has an index on expires_at (\(expiryIndexes.joined(separator: ", "))), which makes every completion write a new index entry; drop it once no proxy of an earlier version uses the table (config/postgres.sql)")
                }
                return Self.trial(on: connection, sql: sql, logger: logger)
            }.map {
                self.checked.withLockedValue { $0 = sql }
                return sql
            }
        }
    }

    /// Runs the claim, both completions and the release once on a key of its own, in a
    /// transaction that is rolled back: what only running them shows (a table without its
    /// primary key, a missing right) fails here, not on every request.
    private static func trial(on connection: PostgresConnection, sql: PostgresSQL, logger: Logger) -> EventLoopFuture<Void> {
        @Sendable func run(_ text: String, _ bind: (inout PostgresBindings) -> Void = { _ in }) -> EventLoopFuture<Void> {
            var binds = PostgresBindings()
            bind(&binds)
            return connection.query(PostgresQuery(unsafeSQL: text, binds: binds), logger: logger).map { _ in }
        }
        // A key of its own, so that proxies starting together never wait for each other's trial.
        let key = "idemproxy-start-check-\(UInt64.random(in: 0...UInt64.max))"
        let token = ByteBuffer(bytes: [UInt8](repeating: 0, count: IdempotencyRecord.ownerLength))
        let fingerprint = ByteBuffer(bytes: [UInt8](repeating: 0, count: IdempotencyRecord.fingerprintLength))
        let checked = run("BEGIN").flatMap {
            run(sql.claim) {
                $0.append([key]); $0.append([token]); $0.append([fingerprint]); $0.append([Int64(1)])
                $0.append([WallClock.milliseconds() + 60_000]); $0.append([Int64(1)])
            }
        }.flatMap {
            run(sql.completeOwned) {
                $0.append([key]); $0.append([token]); $0.append([fingerprint]); $0.append([token]); $0.append([Int64(1)])
            }
        }.flatMap {
            run(sql.complete) {
                $0.append(key); $0.append(token); $0.append(fingerprint); $0.append(token); $0.append(Int64(1)); $0.append(Int64(0))
            }
        }.flatMap {
            run(sql.release) { $0.append(key); $0.append(token) }
        }
        return checked.flatMap { run("ROLLBACK") }.flatMapError { error in
            run("ROLLBACK").flatMapErrorThrowing { _ in }.flatMapThrowing {
                throw Self.unusable(sql.table, LongTermStoreError(error))
            }
        }
    }

    /// What the table or the rights are to blame for (a missing right, column, constraint or
    /// feature: class 42, 23502, 0A000) makes the table unusable; anything else (a server
    /// restarting, a lock wait cut by statement_timeout, a read-only standby) passes, to be
    /// tried again.
    private static func unusable(_ table: String, _ error: LongTermStoreError) -> LongTermStoreError {
        guard case .server(let state, _) = error, state.hasPrefix("42") || state == "23502" || state == "0A000" else { return error }
        return .unusableTable("PostgreSQL table \(table) cannot be created or used: \(error)")
    }
}
