import IdempotencyCore
import Logging
import NIOCore
import PostgresNIO

/// Builds the long-term store from the configuration (SPEC §8): the connection settings, the
/// check of the table at start, and one loop's store.
struct PostgresWiring: Sendable {
    /// Connections per event loop: one statement runs at a time on each.
    static let connectionsPerLoop = 4

    let url: PostgresURL
    let sql: PostgresSQL
    let timeout: TimeAmount
    let schema = PostgresSchema()
    let connection: PostgresConnection.Configuration

    init(url: PostgresURL, configuration c: ProxyConfiguration) throws {
        self.url = url
        sql = PostgresSQL(table: c.postgresTable)
        timeout = .milliseconds(c.postgresTimeoutMs)
        var connection = PostgresConnection.Configuration(
            host: url.address.host, port: url.address.port, username: url.username, password: url.password,
            database: url.database, tls: try Self.tls(url))
        connection.options.connectTimeout = timeout
        // The server gives up on a statement a little after we do, so that a statement stuck on
        // a row lock does not hold a connection for long.
        connection.options.additionalStartupParameters = [("statement_timeout", String(c.postgresTimeoutMs * 2))]
        self.connection = connection
    }

    /// Creates or checks the table before serving. A table that cannot be used, or a server
    /// that refuses us, stops the start; a server that does not answer yet does not (the first
    /// connection that opens makes the same check).
    func prepare(on eventLoop: any EventLoop, logger: Logger) async throws {
        do {
            let connection = try await PostgresConnection.connect(on: eventLoop, configuration: connection, id: 0, logger: logger).get()
            defer { connection.closeNow() }
            try await schema.ensure(on: connection, sql: sql, logger: logger).get()
        } catch {
            let failure = LongTermStoreError(error)
            switch failure {
            case .unusableTable, .server:
                throw StartError("the long-term store cannot be used (\(url)): \(failure)")
            case .unavailable, .timeout, .malformedRecord:
                logger.warning(
                    "PostgreSQL does not answer at start; the table is checked once it does",
                    metadata: ["postgres": "\(url)", "error": "\(failure)"])
            }
        }
    }

    func store(on eventLoop: any EventLoop, metrics: ProxyMetrics, logger: Logger) -> PostgresRecordStore {
        let connections = PostgresConnections(
            eventLoop: eventLoop, configuration: connection, sql: sql, schema: schema, size: Self.connectionsPerLoop,
            timeout: timeout, logger: logger)
        return PostgresRecordStore(connections: connections, metrics: metrics)
    }

    /// SPEC §9: `sslmode`.
    private static func tls(_ url: PostgresURL) throws -> PostgresConnection.Configuration.TLS {
        switch url.sslMode {
        case .disable:
            return .disable
        case .require:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            return .require(try NIOSSLContext(configuration: tls))
        case .verifyFull:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .fullVerification
            if let file = url.sslRootCert { tls.trustRoots = .file(file) }
            return .require(try NIOSSLContext(configuration: tls))
        }
    }
}

/// Why the proxy did not start; the message says what to fix.
public struct StartError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
