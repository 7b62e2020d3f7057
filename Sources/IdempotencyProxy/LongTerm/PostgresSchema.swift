import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// Makes sure the table exists and has the columns the statements need (SPEC §8.5), once per
/// process: at start when PostgreSQL answers then, else on the first connection that opens.
final class PostgresSchema: Sendable {
    private let verified = NIOLockedValueBox(false)

    /// Creates the table and its index when missing, then checks the columns: an unusable
    /// table fails with `.unusableTable`, naming it.
    func ensure(on connection: PostgresConnection, sql: PostgresSQL, logger: Logger) -> EventLoopFuture<Void> {
        if verified.withLockedValue({ $0 }) { return connection.eventLoop.makeSucceededVoidFuture() }
        func run(_ statement: String) -> EventLoopFuture<Void> {
            connection.query(PostgresQuery(unsafeSQL: statement), logger: logger).map { _ in }
                .flatMapErrorThrowing { error in
                    // Another proxy creating the same table or index at the same moment.
                    if case .server(let state, _) = LongTermStoreError(error), ["23505", "42P07"].contains(state) { return }
                    throw Self.unusable(sql.table, LongTermStoreError(error))
                }
        }
        // The columns are checked before the index is made on one of them.
        return run(sql.createTable).flatMap {
            connection.query(PostgresQuery(unsafeSQL: sql.columnsQuery), logger: logger)
        }.flatMapThrowing { result in
            var found: [String: String] = [:]
            for row in result.rows {
                let (name, type) = try row.decode((String, String).self)
                found[name] = type
            }
            let missing = PostgresSQL.columns.filter { found[$0.name] != $0.type }
            guard missing.isEmpty else {
                let wanted = missing.map { "\($0.name) \($0.type)" }.joined(separator: ", ")
                throw LongTermStoreError.unusableTable(
                    "PostgreSQL table \(sql.table) cannot be used: it lacks the columns \(wanted) (config/postgres.sql has the schema)")
            }
        }.flatMap {
            run(sql.createIndex)
        }.map {
            self.verified.withLockedValue { $0 = true }
        }
    }

    private static func unusable(_ table: String, _ error: LongTermStoreError) -> LongTermStoreError {
        guard case .server = error else { return error }
        return .unusableTable("PostgreSQL table \(table) cannot be created or used: \(error)")
    }
}
