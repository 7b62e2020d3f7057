import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import RedisClient

/// One event loop's connections to PostgreSQL: at most `size`, opened when the load needs them,
/// each with the statements of every request prepared on it, all on the loop (no thread hop). A
/// connection runs one statement at a time, so a statement goes to the connection with the
/// fewest waiting. A connection that breaks, fails to open, or lets a statement run past
/// `postgres_timeout` is closed and opened again after `reconnectDelay`; meanwhile statements
/// fail at once, so a PostgreSQL outage costs requests no waiting.
///
/// Behind a pooler in transaction mode (PgBouncer) each statement may meet another server
/// connection, where a statement prepared on the last one does not exist (SQLSTATE 26000). Such
/// a statement never ran, so it is sent again unnamed (Parse, Bind, Execute and Sync in one
/// write), and so is every statement of the loop from then on: nothing is kept on the server
/// between statements (docs/design.md, "PostgreSQL through a pooler").
final class PostgresConnections {
    /// The store's statements.
    enum Statement: Int, CaseIterable {
        case claim, complete, completeOwned, release, withdrawUnanswered, sweep, ping, inspect, forget

        /// Prepared on every connection: the batches of every request, whose rows the conflict
        /// finds, so that their plan has no scan to choose. The others run rarely and are sent
        /// unnamed, planned for the table as it is each time: a generic plan cached while the
        /// table was small scans it whole until autovacuum analyses it again (docs/performance.md,
        /// "Plans PostgreSQL caches").
        var isPrepared: Bool { self == .claim || self == .completeOwned }
    }

    private struct Ready: Sendable {
        let connection: PostgresConnection
        /// By `Statement.rawValue`; nil where not `isPrepared`, and for all on a connection opened
        /// once the loop sends its statements unnamed.
        let prepared: [PreparedQuery?]
        /// Each statement's SQL for the table as checked, by `Statement.rawValue`.
        let texts: [String]
    }

    private enum SlotState {
        case idle
        case opening(EventLoopFuture<Ready>)
        case ready(Ready)
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
    /// A named statement met a server connection that did not know it: a pooler is in front.
    private var unnamed = false
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
    }

    /// How many connections the loop may have.
    var count: Int { slots.count }

    /// Runs a statement; its rows, or why there are none, within `postgres_timeout`.
    func execute(
        _ statement: Statement, _ binds: [PostgresData],
        completion: @escaping (Result<[PostgresRow], LongTermStoreError>) -> Void
    ) {
        guard let slot = pick() else {
            return completion(.failure(.unavailable("no connection; reconnecting")))
        }
        let answer = AnswerOnce(completion)
        slot.waiting += 1
        // An open connection takes the statement at once; one still to open, once it has.
        let readyNow: Ready?
        let opened: EventLoopFuture<Ready>?
        switch slot.state {
        case .ready(let ready): (readyNow, opened) = (ready, nil)
        case .opening(let future): (readyNow, opened) = (nil, future)
        case .idle, .resting: (readyNow, opened) = (nil, open(slot))
        }
        let sent = SentOn()
        let timer = eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            // The connection is stuck (a paused server, a lost network): statements queued
            // behind this one would wait too; closing it fails them and makes a fresh one.
            self.rest(slot, ifStill: opened, sentOn: sent.connection)
            answer.complete(.failure(sent.connection == nil ? .unavailable("no connection within postgres_timeout") : .timeout))
        }
        let finished = { (result: Result<[PostgresRow], any Error>) in
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
        let send = { (ready: Ready) -> EventLoopFuture<[PostgresRow]> in
            sent.connection = ready.connection
            return self.run(statement, binds, on: ready)
        }
        if let readyNow {
            send(readyNow).assumeIsolated().whenComplete(finished)
        } else if let opened {
            opened.assumeIsolated().flatMap(send).whenComplete(finished)
        }
    }

    /// The prepared statement, or the same text unnamed: one not prepared, or any once a pooler
    /// has shown itself.
    private func run(_ statement: Statement, _ binds: [PostgresData], on ready: Ready) -> EventLoopFuture<[PostgresRow]> {
        let text = ready.texts[statement.rawValue]
        guard !unnamed, let prepared = ready.prepared[statement.rawValue] else { return ready.connection.query(text, binds).map(\.rows) }
        return prepared.execute(binds).assumeIsolated().flatMapError { error in
            guard case .server("26000", _) = LongTermStoreError(error) else { return ready.connection.eventLoop.makeFailedFuture(error) }
            if !self.unnamed {
                self.unnamed = true
                self.logger.info("PostgreSQL is reached through a pooler in transaction mode; statements are sent unnamed from now on")
            }
            return ready.connection.query(text, binds).map(\.rows)
        }.nonisolated()
    }

    func close() {
        closed = true
        for slot in slots {
            switch slot.state {
            case .ready(let ready): ready.connection.closeNow()
            case .opening(let future): future.whenSuccess { $0.connection.closeNow() }
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

    /// Rests the slot if it still holds the connection the statement went out on, or is
    /// still opening it: a late timer or failure never closes a newer connection.
    private func rest(_ slot: Slot, ifStill opened: EventLoopFuture<Ready>?, sentOn connection: PostgresConnection?) {
        switch slot.state {
        case .opening(let future) where future === opened: rest(slot, closing: false)
        case .ready(let ready) where ready.connection === connection: rest(slot, closing: true)
        default: break
        }
    }

    private func open(_ slot: Slot) -> EventLoopFuture<Ready> {
        nextID += 1
        let sql = self.sql
        let schema = self.schema
        let logger = self.logger
        let future = PostgresConnection.connect(on: eventLoop, configuration: configuration, id: nextID, logger: logger)
            .flatMap { [unnamed] connection in
                schema.ensure(on: connection, sql: sql, logger: logger).flatMap { sql in
                    Self.prepareStatements(on: connection, sql: sql, unnamed: unnamed).map {
                        Ready(connection: connection, prepared: $0, texts: Statement.allCases.map { sql.text(of: $0) })
                    }
                }
                    .flatMapErrorThrowing { error in
                        connection.closeNow()
                        throw error
                    }
            }
        slot.state = .opening(future)
        future.assumeIsolated().whenComplete { result in
            guard case .opening(let opening) = slot.state, opening === future else {
                if case .success(let ready) = result { ready.connection.closeNow() }
                return
            }
            switch result {
            case .success(let ready):
                slot.state = .ready(ready)
                ready.connection.closeFuture.assumeIsolated().whenComplete { _ in
                    if case .ready(let current) = slot.state, current.connection === ready.connection {
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

    /// The statements that are `isPrepared`, prepared on `connection`; none once the loop sends
    /// its statements `unnamed`.
    private static func prepareStatements(on connection: PostgresConnection, sql: PostgresSQL, unnamed: Bool) -> EventLoopFuture<[PreparedQuery?]> {
        let prepares = Statement.allCases.map { statement in
            statement.isPrepared && !unnamed
                ? connection.prepare(query: sql.text(of: statement)).map(Optional.some) : connection.eventLoop.makeSucceededFuture(nil)
        }
        return EventLoopFuture.whenAllSucceed(prepares, on: connection.eventLoop)
    }

    /// Out of use until `reconnectDelay` has passed.
    private func rest(_ slot: Slot, closing: Bool) {
        if closing, case .ready(let ready) = slot.state { ready.connection.closeNow() }
        slot.state = .resting(retryAt: closed ? .distantFuture : .now() + Self.reconnectDelay)
    }
}

extension PostgresSQL {
    func text(of statement: PostgresConnections.Statement) -> String {
        switch statement {
        case .claim: return claim
        case .complete: return complete
        case .completeOwned: return completeOwned
        case .release: return release
        case .withdrawUnanswered: return withdrawUnanswered
        case .sweep: return sweep
        case .ping: return "SELECT 1"
        case .inspect: return inspect
        case .forget: return forget
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
