import Logging
import NIOConcurrencyHelpers
import NIOCore
import IdempotencyCore
import PostgresNIO

/// Makes sure the table exists and has the columns the statements need (docs/behaviour.md §3, long-term store), once per
/// process: at start when PostgreSQL answers then, else on the first connection that opens.
/// A missing table is created with its index, in one transaction; an existing table is never
/// altered (an index built on it would hold its writes for as long as the build takes), so a
/// role with no more than the rights `config/postgres.sql` names can use a table an operator made.
final class PostgresSchema: Sendable {
    /// The statements for the table as checked, once it has been.
    private let checked = NIOLockedValueBox<PostgresSQL?>(nil)

    /// The statements for the table found: one without `sweep_after` and a valid index on it (an
    /// earlier version's, or one being upgraded) gets the earlier statements. An unusable table
    /// fails with `.unusableTable`, naming it.
    func ensure(on connection: PostgresConnection, sql configured: PostgresSQL, logger: Logger) -> EventLoopFuture<PostgresSQL> {
        if let sql = checked.withLockedValue({ $0 }) { return connection.eventLoop.makeSucceededFuture(sql) }
        let table = configured.table
        let session = Session(connection: connection, logger: logger)
        return session.rows(configured.tableExists).flatMapThrowing { try $0.first?.decode(Bool.self) ?? false }.flatMap { exists in
            exists ? connection.eventLoop.makeSucceededVoidFuture() : Self.create(configured, in: session)
        }.flatMap {
            session.rows(configured.columnsQuery).and(session.rows(configured.indexesQuery))
        }.flatMapThrowing { columnRows, indexRows in
            var found: [String: String] = [:]
            for row in columnRows {
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
            var valid: [String: [String]] = [:]
            var invalid: [String] = []
            for row in indexRows {
                let (column, index, isValid) = try row.decode((String, String, Bool).self)
                if isValid { valid[column, default: []].append(index) } else { invalid.append(index) }
            }
            var sql = configured
            sql.hasSweepAfter = found[sweepAfter.name] != nil && valid["sweep_after"] != nil
            Self.warn(about: sql, valid: valid, invalid: invalid, column: found[sweepAfter.name] != nil, logger: logger)
            return sql
        }.flatMap { sql in
            Self.trial(sql, in: session).map {
                self.checked.withLockedValue { $0 = sql }
                return sql
            }
        }
    }

    /// The table and its index, in one transaction, so that a proxy starting beside this one
    /// finds both or neither. Another proxy creating them at the same moment is no failure.
    private static func create(_ sql: PostgresSQL, in session: Session) -> EventLoopFuture<Void> {
        session.transaction(ending: "COMMIT") {
            session.run(sql.createTable).flatMap { session.run(sql.createIndex) }
        }.flatMapErrorThrowing { error in
            if case .server(let state, _) = LongTermStoreError(error), ["23505", "42P07"].contains(state) { return }
            throw Self.unusable(sql.table, LongTermStoreError(error))
        }
    }

    /// What the table lacks for the sweep or for completions written in place: usable, but
    /// slower, until an operator acts (`config/postgres.sql`).
    private static func warn(about sql: PostgresSQL, valid: [String: [String]], invalid: [String], column: Bool, logger: Logger) {
        let table = sql.table
        if !invalid.isEmpty {
            logger.warning(
                "PostgreSQL table \(table) has invalid indexes (\(invalid.joined(separator: ", "))), which the sweep cannot use: a CREATE INDEX CONCURRENTLY still running or failed, or a DROP INDEX CONCURRENTLY cut short; one that failed is dropped and built again (config/postgres.sql)")
        }
        if !column {
            logger.warning(
                "PostgreSQL table \(table) has no sweep_after column (an earlier version made it): completions are not written in place; config/postgres.sql says how to upgrade the table")
        } else if !sql.hasSweepAfter {
            logger.warning(
                "PostgreSQL table \(table) has a sweep_after column but no valid index on it: the statements of the earlier table are used until the index is built (config/postgres.sql) and the proxy restarted")
        }
        if valid[sql.sweepColumn] == nil {
            logger.warning(
                "PostgreSQL table \(table) has no index on \(sql.sweepColumn): the sweep of expired rows scans the table (config/postgres.sql has the index)")
        }
        if sql.hasSweepAfter, let expiry = valid["expires_at"] {
            logger.warning(
                "PostgreSQL table \(table) has an index on expires_at (\(expiry.joined(separator: ", "))), which makes every completion write a new index entry; drop it once no proxy of an earlier version uses the table (config/postgres.sql)")
        }
    }

    /// Runs the claim, both completions and the release once on a key of its own, in a
    /// transaction that is rolled back: what only running them shows (a table without its
    /// primary key, a missing right) fails here, not on every request.
    private static func trial(_ sql: PostgresSQL, in session: Session) -> EventLoopFuture<Void> {
        let run = session.run
        // A key of its own, so that proxies starting together never wait for each other's trial.
        let key = "idemproxy-start-check-\(UInt64.random(in: 0...UInt64.max))"
        let token = ByteBuffer(bytes: [UInt8](repeating: 0, count: IdempotencyRecord.ownerLength))
        let fingerprint = ByteBuffer(bytes: [UInt8](repeating: 0, count: IdempotencyRecord.fingerprintLength))
        return session.transaction(ending: "ROLLBACK") {
            run(sql.claim) {
                $0.append([key]); $0.append([token]); $0.append([fingerprint]); $0.append([Int64(1)])
                $0.append([WallClock.milliseconds() + 60_000]); $0.append([Int64(1)])
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
        }.flatMapErrorThrowing { error in
            throw Self.unusable(sql.table, LongTermStoreError(error))
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

/// The check's statements, on the connection it runs on.
private struct Session: Sendable {
    let connection: PostgresConnection
    let logger: Logger

    func rows(_ query: String) -> EventLoopFuture<[PostgresRow]> {
        connection.query(PostgresQuery(unsafeSQL: query), logger: logger).map(\.rows)
    }

    func run(_ text: String, _ bind: (inout PostgresBindings) -> Void = { _ in }) -> EventLoopFuture<Void> {
        var binds = PostgresBindings()
        bind(&binds)
        return connection.query(PostgresQuery(unsafeSQL: text, binds: binds), logger: logger).map { _ in }
    }

    /// `body` between `BEGIN` and `end` (`COMMIT`, or `ROLLBACK` for a trial); one that fails
    /// is rolled back, and its error passed on.
    func transaction(ending end: String, _ body: @escaping @Sendable () -> EventLoopFuture<Void>) -> EventLoopFuture<Void> {
        run("BEGIN").flatMap(body).flatMap { run(end) }.flatMapError { error in
            run("ROLLBACK").flatMapErrorThrowing { _ in }.flatMapThrowing { throw error }
        }
    }
}
