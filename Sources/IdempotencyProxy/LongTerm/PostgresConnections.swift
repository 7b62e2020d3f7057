import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import RedisClient

/// One event loop's connections to PostgreSQL: at most `size`, opened when the load needs them,
/// all on the loop (no thread hop). A connection runs one statement at a time, so a statement
/// goes to the connection with the fewest waiting.
///
/// Statements go out unnamed (Parse, Bind, Execute and Sync in one write, one round trip), and
/// nothing else is kept on the server between them: behind a pooler in transaction mode
/// (PgBouncer) each statement may meet another server connection, where a statement prepared
/// on the last one does not exist (docs/design.md, "PostgreSQL through a pooler"). A connection that breaks, fails to open, or lets a statement run past
/// `postgres_timeout` is closed and opened again after `reconnectDelay`; meanwhile statements
/// fail at once, so a PostgreSQL outage costs requests no waiting.
final class PostgresConnections {
    /// The statements of the store.
    enum Statement: Int, CaseIterable {
        case claim, complete, release, withdrawUnanswered, sweep, ping
    }

    private enum SlotState {
        case idle
        case opening(EventLoopFuture<PostgresConnection>)
        case ready(PostgresConnection)
        /// Broken or failed to open: not tried again before `retryAt`.
        case resting(retryAt: NIODeadline)
    }

    private final class Slot {
        var state = SlotState.idle
        /// Statements sent on it and not answered yet.
        var waiting = 0
    }

    static let reconnectDelay = TimeAmount.milliseconds(500)

    private let eventLoop: any EventLoop
    private let configuration: PostgresConnection.Configuration
    private let sql: PostgresSQL
    private let schema: PostgresSchema
    private let timeout: TimeAmount
    private let logger: Logger
    private var slots: [Slot]
    /// Each statement's SQL, by `Statement.rawValue`.
    private let texts: [String]
    private var nextID = 0
    private var closed = false

    init(
        eventLoop: any EventLoop, configuration: PostgresConnection.Configuration, sql: PostgresSQL,
        schema: PostgresSchema, size: Int, timeout: TimeAmount, logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.sql = sql
        self.schema = schema
        self.timeout = timeout
        self.logger = logger
        slots = (0..<size).map { _ in Slot() }
        texts = Statement.allCases.map { sql.text(of: $0) }
    }

    /// Runs a statement; its rows, or why there are none, within `postgres_timeout`.
    func execute(
        _ statement: Statement, _ binds: PostgresBindings,
        completion: @escaping (Result<[PostgresRow], LongTermStoreError>) -> Void
    ) {
        guard let slot = pick() else {
            return completion(.failure(.unavailable("no connection; reconnecting")))
        }
        let answer = AnswerOnce(completion)
        slot.waiting += 1
        let opened = ready(slot)
        let sent = SentOn()
        let timer = eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            // The connection is stuck (a paused server, a lost network): statements queued
            // behind this one would wait too; closing it fails them and makes a fresh one.
            self.rest(slot, ifStill: opened, sentOn: sent.connection)
            answer.complete(.failure(sent.connection == nil ? .unavailable("no connection within postgres_timeout") : .timeout))
        }
        let query = PostgresQuery(unsafeSQL: texts[statement.rawValue], binds: binds)
        let logger = self.logger
        opened.assumeIsolated().flatMap { connection in
            sent.connection = connection
            return connection.query(query, logger: logger).map(\.rows)
        }.whenComplete { result in
            slot.waiting -= 1
            timer.cancel()
            switch result {
            case .success(let rows): answer.complete(.success(rows))
            case .failure(let error):
                var failure = LongTermStoreError(error)
                if failure.brokeConnection { self.rest(slot, ifStill: opened, sentOn: sent.connection) }
                // A connection lost after the statement went out may have run it.
                if case .unavailable(let why) = failure, sent.connection != nil { failure = .unanswered(why) }
                answer.complete(.failure(failure))
            }
        }
    }

    func close() {
        closed = true
        for slot in slots {
            switch slot.state {
            case .ready(let connection): connection.closeNow()
            case .opening(let future): future.whenSuccess { $0.closeNow() }
            case .idle, .resting: break
            }
            slot.state = .resting(retryAt: .distantFuture)
        }
    }

    // MARK: - slots

    /// The usable slot with the fewest statements waiting; an unopened one counts as empty, so
    /// connections are opened as the load grows.
    private func pick() -> Slot? {
        let now = NIODeadline.now()
        var best: Slot?
        for slot in slots {
            if case .resting(let retryAt) = slot.state, now < retryAt { continue }
            if best == nil || slot.waiting < best!.waiting { best = slot }
        }
        return best
    }

    private func ready(_ slot: Slot) -> EventLoopFuture<PostgresConnection> {
        switch slot.state {
        case .ready(let connection): return eventLoop.makeSucceededFuture(connection)
        case .opening(let future): return future
        case .idle, .resting: return open(slot)
        }
    }

    /// Rests the slot if it still holds the connection the statement went out on, or is
    /// still opening it: a late timer or failure never closes a newer connection.
    private func rest(_ slot: Slot, ifStill opened: EventLoopFuture<PostgresConnection>, sentOn connection: PostgresConnection?) {
        switch slot.state {
        case .opening(let future) where future === opened: rest(slot, closing: false)
        case .ready(let current) where current === connection: rest(slot, closing: true)
        default: break
        }
    }

    private func open(_ slot: Slot) -> EventLoopFuture<PostgresConnection> {
        nextID += 1
        let sql = self.sql
        let schema = self.schema
        let logger = self.logger
        let future = PostgresConnection.connect(on: eventLoop, configuration: configuration, id: nextID, logger: logger)
            .flatMap { connection in
                schema.ensure(on: connection, sql: sql, logger: logger)
                    .map { connection }
                    .flatMapErrorThrowing { error in
                        connection.closeNow()
                        throw error
                    }
            }
        slot.state = .opening(future)
        future.assumeIsolated().whenComplete { result in
            guard case .opening(let opening) = slot.state, opening === future else {
                if case .success(let connection) = result { connection.closeNow() }
                return
            }
            switch result {
            case .success(let connection):
                slot.state = .ready(connection)
                connection.closeFuture.assumeIsolated().whenComplete { _ in
                    if case .ready(let current) = slot.state, current === connection {
                        self.rest(slot, closing: false)
                    }
                }
            case .failure(let error):
                self.logger.debug("PostgreSQL connection failed", metadata: ["error": "\(LongTermStoreError(error))"])
                self.rest(slot, closing: false)
            }
        }
        return future
    }

    /// Out of use until `reconnectDelay` has passed.
    private func rest(_ slot: Slot, closing: Bool) {
        if closing, case .ready(let connection) = slot.state { connection.closeNow() }
        slot.state = .resting(retryAt: closed ? .distantFuture : .now() + Self.reconnectDelay)
    }
}

extension PostgresSQL {
    fileprivate func text(of statement: PostgresConnections.Statement) -> String {
        switch statement {
        case .claim: return claim
        case .complete: return complete
        case .release: return release
        case .withdrawUnanswered: return withdrawUnanswered
        case .sweep: return sweep
        case .ping: return "SELECT 1"
        }
    }
}

extension PostgresConnection {
    /// Closes without waiting (`close()` alone is ambiguous beside its async overload).
    ///
    /// The connection is kept until it is closed: it must not be freed open.
    func closeNow() {
        let closed: EventLoopFuture<Void> = close()
        closed.whenComplete { _ in withExtendedLifetime(self) {} }
    }
}

/// The connection a statement went out on, once it has.
private final class SentOn {
    var connection: PostgresConnection?
}
