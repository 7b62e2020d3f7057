import IdempotencyCore
import Logging
import NIOCore
import PostgresNIO

/// Builds the long-term store from the configuration (docs/behaviour.md §3, long-term store): the connection settings, the
/// check of the table at start, and one loop's store.
struct PostgresWiring: Sendable {
    /// Connections per event loop: one statement runs at a time on each, and with group commit
    /// (`PostgresRecordStore`) whatever queues behind it goes out as the next one. One per loop
    /// makes the largest batches: first-time requests ran at 1.5× the rate of four connections
    /// each sending its own statements, and the server spent half the CPU per request
    /// (docs/performance.md, "Group commit"). With the loops taking turns a loop has one batch
    /// out at a time whatever this says; more would only carry the single statements.
    static let connectionsPerLoop = 1

    let url: PostgresURL
    let sql: PostgresSQL
    let timeout: TimeAmount
    let schema = PostgresSchema()
    /// Event loops that share a turn: one statement of claims or completions out at a time for
    /// each pair of loops (for the whole proxy on 2 cores). Larger statements cost less per
    /// request on both sides (docs/performance.md, "Loops taking turns"); pairs keep the wait
    /// for the turn to one other loop's statement however many cores there are.
    static let loopsPerTurn = 2

    /// By loop index / `loopsPerTurn`.
    let turns: [CommitTurn]
    let connection: PostgresConnection.Configuration

    /// `tls`: `TLSContexts.postgres`; `loops`: the event loops that will have stores.
    init(url: PostgresURL, tls: PostgresConnection.Configuration.TLS, configuration c: ProxyConfiguration, loops: Int) {
        self.init(url: url, tls: tls, configuration: c, turns: (0..<(loops + Self.loopsPerTurn - 1) / Self.loopsPerTurn).map { _ in CommitTurn() })
    }

    init(url: PostgresURL, tls: PostgresConnection.Configuration.TLS, configuration c: ProxyConfiguration, turns: [CommitTurn]) {
        self.url = url
        self.turns = turns
        sql = PostgresSQL(table: c.postgresTable, synchronousCommit: c.postgresSynchronousCommit)
        timeout = .milliseconds(c.postgresTimeoutMs)
        var connection = PostgresConnection.Configuration(
            host: url.address.host, port: url.address.port, username: url.username, password: url.password,
            database: url.database, tls: tls)
        connection.options.connectTimeout = timeout
        // No startup parameter beyond user and database: a pooler refuses any it does not know
        // (PgBouncer: "unsupported startup parameter"), so `postgres_timeout` is kept here, by
        // the client (docs/design.md, "PostgreSQL through a pooler").
        self.connection = connection
    }

    /// Creates or checks the table (which runs its statements once) before serving. A table
    /// that cannot be used, or a server that refuses us (a login, a database, a right), stops
    /// the start; a server that does not answer yet, or is starting up, does not (the first
    /// connection that opens makes the same check).
    func prepare(on eventLoop: any EventLoop, logger: Logger) async throws {
        do {
            let connection = try await PostgresConnection.connect(on: eventLoop, configuration: connection, id: 0, logger: logger).get()
            defer { connection.closeNow() }
            _ = try await schema.ensure(on: connection, sql: sql, logger: logger).get()
        } catch {
            let failure = LongTermStoreError(error)
            if failure.isMisconfiguration { throw StartError("the long-term store cannot be used (\(url)): \(failure)") }
            logger.warning(
                "PostgreSQL does not answer at start; the table is checked once it does",
                metadata: ["postgres": "\(url)", "error": "\(failure)"])
        }
    }

    /// The store of the event loop numbered `loop`; `connections` of its own (the sweeper has
    /// one, so that requests never queue behind a sweep). It takes turns with the other loop of
    /// its pair; the sweeper's (`loop` nil), whose statements are few, takes none.
    func store(
        on eventLoop: any EventLoop, loop: Int?, connections size: Int = Self.connectionsPerLoop, metrics: ProxyMetrics, logger: Logger
    ) -> PostgresRecordStore {
        let connections = PostgresConnections(
            eventLoop: eventLoop, configuration: connection, sql: sql, schema: schema, size: size, timeout: timeout,
            logger: logger)
        return PostgresRecordStore(connections: connections, metrics: metrics, turn: loop.map(turn(ofLoop:)), eventLoop: eventLoop)
    }

    func turn(ofLoop index: Int) -> CommitTurn { turns[index / Self.loopsPerTurn] }
}

/// Why the proxy did not start; the message says what to fix.
public struct StartError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
