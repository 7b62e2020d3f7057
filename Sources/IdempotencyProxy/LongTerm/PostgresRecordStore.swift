import IdempotencyCore
import NIOCore
import PostgresNIO

/// The long-term store over one loop's PostgreSQL connections; callbacks run on that loop.
///
/// Claims and completions are committed in groups (`GroupCommitQueue`): at most one batch per
/// connection is out at a time, and whatever queues meanwhile goes out together when one
/// answers, so that a busy loop pays one round trip, one statement and one commit for many
/// requests. With a `CommitTurn`, one batch is out at a time for the loops sharing it. A batch
/// that times out or loses its connection fails as a whole, as each of its statements alone
/// would have; one the server refuses is sent again item by item.
final class PostgresRecordStore: LongTermStore {
    private let connections: PostgresConnections
    private let metrics: ProxyMetrics
    private let eventLoop: any EventLoop
    private let turn: CommitTurn?
    /// This store's place in `turn`.
    private var member = 0
    /// `turn` says this store's batches may go out (it holds while one is out).
    private var holdsTurn = false
    /// Asks for the turn again once `turn`'s patience has passed: a loop in line goes around a
    /// stuck holder even if nothing new arrives to make it ask.
    private var askAgain: Scheduled<Void>?
    private var claims = GroupCommitQueue<PendingClaim>()
    private var completions = GroupCommitQueue<PendingCompletion>()
    /// Batches sent and not answered yet, at most `maxBatchesOut`. (Items of a refused batch sent
    /// again one by one are not counted.)
    private var batchesOut = 0
    /// One per connection, and with a turn, one.
    private let maxBatchesOut: Int
    /// Orders the items of both queues, so that the kind that has waited longest goes first.
    private var queued: UInt64 = 0
    /// `sendBatches` is running.
    private var sending = false

    private struct PendingClaim {
        let owner: [UInt8]
        let fingerprint: [UInt8]
        let lockTTLMs: Int64
        let retentionMs: Int64
        let deadlineMs: Int64
        let completion: (Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>) -> Void
    }

    /// What the statements bind, not the whole record: an item is copied into its batch, one
    /// retain per field.
    private struct PendingCompletion {
        let owner: [UInt8]
        let fingerprint: [UInt8]
        /// The record, encoded once, for the batch and for `completeAlone` after it.
        let encoded: [UInt8]
        let retentionMs: Int64
        let lockEndMs: Int64
        let completion: (Result<Bool, LongTermStoreError>) -> Void
    }

    /// `turn`: shared by the stores of every loop (the sweeper's takes no turn). Made on
    /// `eventLoop`, the connections' loop.
    init(connections: PostgresConnections, metrics: ProxyMetrics, turn: CommitTurn?, eventLoop: any EventLoop) {
        self.connections = connections
        self.metrics = metrics
        self.eventLoop = eventLoop
        self.turn = turn
        maxBatchesOut = turn == nil ? connections.count : 1
        member = turn?.join(on: eventLoop) { [weak self] in self?.handedTurn() } ?? 0
    }

    func claim(
        key: String, owner: [UInt8], fingerprint: [UInt8], lockTTLMs: Int64, retentionMs: Int64, deadlineMs: Int64,
        completion: @escaping (Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>) -> Void
    ) {
        queued += 1
        claims.append(
            key: key, sequence: queued,
            PendingClaim(
                owner: owner, fingerprint: fingerprint, lockTTLMs: lockTTLMs, retentionMs: retentionMs, deadlineMs: deadlineMs,
                completion: completion))
        sendBatches()
    }

    func complete(
        key: String, record: IdempotencyRecord, retentionMs: Int64, lockEndMs: Int64,
        completion: @escaping (Result<Bool, LongTermStoreError>) -> Void
    ) {
        queued += 1
        completions.append(
            key: key, sequence: queued,
            PendingCompletion(
                owner: record.owner, fingerprint: record.fingerprint, encoded: record.encoded(), retentionMs: retentionMs,
                lockEndMs: lockEndMs, completion: completion))
        sendBatches()
    }

    /// Sends what waits while a connection is free for it. A batch answered at once (no
    /// connection) calls back into this: the loop already running carries on, so that a long
    /// queue fails in a loop, not in a recursion.
    private func sendBatches() {
        guard !sending else { return }
        sending = true
        defer { sending = false }
        while batchesOut < maxBatchesOut {
            // The kind that has waited longest goes first.
            let completionsFirst: Bool
            switch (claims.oldest, completions.oldest) {
            case (nil, nil): return
            case (.some(let claim), .some(let completion)): completionsFirst = completion < claim
            case (.some, nil): completionsFirst = false
            case (nil, .some): completionsFirst = true
            }
            guard holdsTurn || takeTurn() else { return }
            if completionsFirst { sendCompletions(completions.nextBatch()) } else { sendClaims(claims.nextBatch()) }
        }
    }

    /// True once the turn is this store's; false while it waits in line.
    private func takeTurn() -> Bool {
        guard let turn else { return true }
        guard turn.take(member) else {
            if askAgain == nil {
                askAgain = eventLoop.assumeIsolated().scheduleTask(in: turn.patience) {
                    self.askAgain = nil
                    self.sendBatches()
                }
            }
            return false
        }
        holdsTurn = true
        askAgain?.cancel()
        askAgain = nil
        return true
    }

    /// A claim that waited past its deadline is still sent: the statement writes it expired
    /// and says it came late (`lateClaim`), as for one that reached a stalled server.
    /// `alone`: an item of a refused batch sent again, outside the turn.
    private func sendClaims(_ batch: [(key: String, item: PendingClaim)], alone: Bool = false) {
        let binds = [
            PostgresArray.text(batch.lazy.map { $0.key }),
            PostgresArray.bytea(batch.lazy.map { $0.item.owner }),
            PostgresArray.bytea(batch.lazy.map { $0.item.fingerprint }),
            PostgresArray.int8(batch.lazy.map { $0.item.lockTTLMs }),
            PostgresArray.int8(batch.lazy.map { $0.item.deadlineMs }),
            PostgresArray.int8(batch.lazy.map { $0.item.retentionMs }),
        ]
        send(.claim, binds, batch, alone: alone, resend: { self.sendClaims([$0], alone: true) }, fail: { $0.completion(.failure($1)) }) { rows in
            var answers: [String: PostgresRow] = [:]
            for row in rows { if let key = Self.key(of: row) { answers[key] = row } }
            for (key, claim) in batch {
                guard let row = answers[key] else {
                    claim.completion(.failure(.malformedRecord("the claim returned no row for its key")))
                    continue
                }
                do {
                    claim.completion(.success(try Self.claimAnswer(row, owner: claim.owner)))
                } catch let error as LongTermStoreError {
                    claim.completion(.failure(error))
                } catch {
                    claim.completion(.failure(.malformedRecord(String(reflecting: error))))
                }
            }
        }
    }

    /// A claim's row: ours (claimed; written expired when it ran late), or what was there.
    private static func claimAnswer(_ row: PostgresRow, owner: [UInt8]) throws -> ProtectedRequestMachine.ClaimAnswer {
        // The int8 is read as raw bytes: a prepared statement's rows come in binary (as bound)
        // but are described as text, which `Int64` decoding refuses.
        var (_, rowOwner, rowFingerprint, record, expiresIn) = try row.decode((ByteBuffer, ByteBuffer, ByteBuffer, ByteBuffer?, ByteBuffer).self)
        guard expiresIn.readableBytes == 8, let expiresInMs = expiresIn.readInteger(as: Int64.self) else {
            throw LongTermStoreError.malformedRecord("the claim returned an expiry of \(expiresIn.readableBytes) bytes")
        }
        let existingOwner = Array(rowOwner.readableBytesView)
        if existingOwner == owner {
            guard expiresInMs > 0 else { throw LongTermStoreError.lateClaim }
            return .claimed
        }
        if let record { return .existing(try IdempotencyRecord.decode(record), expiresInMs: expiresInMs) }
        let existingFingerprint = Array(rowFingerprint.readableBytesView)
        guard existingOwner.count == IdempotencyRecord.ownerLength, existingFingerprint.count == IdempotencyRecord.fingerprintLength else {
            throw LongTermStoreError.malformedRecord("owner or fingerprint of the wrong length")
        }
        return .existing(IdempotencyRecord(owner: existingOwner, fingerprint: existingFingerprint, state: .inFlight), expiresInMs: expiresInMs)
    }

    private func sendCompletions(_ batch: [(key: String, item: PendingCompletion)]) {
        let binds = [
            PostgresArray.text(batch.lazy.map { $0.key }),
            PostgresArray.bytea(batch.lazy.map { $0.item.owner }),
            PostgresArray.bytea(batch.lazy.map { $0.item.fingerprint }),
            PostgresArray.bytea(batch.lazy.map { $0.item.encoded }),
            PostgresArray.int8(batch.lazy.map { $0.item.retentionMs }),
        ]
        // Refused, each goes to the single statement, which decides alone and proposes the
        // record itself, not a tombstone: a trigger of the operator's that refuses some keys'
        // tombstones costs those keys a statement, not their completion. (One that refuses every
        // tombstone fails the table check at start.)
        send(
            .completeOwned, binds, batch, resendingEvenOne: true, resend: { self.completeAlone(key: $0.key, $0.item) },
            fail: { $0.completion(.failure($1)) }
        ) { rows in
            let stored = Set(rows.compactMap(Self.key(of:)))
            for (key, pending) in batch {
                if stored.contains(key) { pending.completion(.success(true)) } else { self.completeAlone(key: key, pending) }
            }
        }
    }

    /// Sends one batch, out (and counted against the connections and the turn, unless `alone`)
    /// until it is answered. A batch the server refused (a lock or statement timeout on one hot
    /// row, a trigger or a check of the operator's) may have failed for one row alone, and wrote
    /// nothing: each of its items is sent again on its own, outside the turn, so that each gets
    /// the answer its own statement would (a batch of one too when `resendingEvenOne`: its own
    /// statement is another). Any other failure answers every item, as each statement alone
    /// would have failed.
    private func send<Item>(
        _ statement: PostgresConnections.Statement, _ binds: [PostgresData], _ batch: [(key: String, item: Item)],
        alone: Bool = false, resendingEvenOne: Bool = false, resend: @escaping ((key: String, item: Item)) -> Void,
        fail: @escaping (Item, LongTermStoreError) -> Void,
        answered: @escaping ([PostgresRow]) -> Void
    ) {
        if !alone { batchesOut += 1 }
        run(statement, binds) { result in
            if !alone {
                self.batchesOut -= 1
                if self.batchesOut == 0 { self.leaveTurn() }
                self.sendBatches()
            }
            switch result {
            case .success(let rows):
                answered(rows)
            case .failure(let error) where (batch.count > 1 || resendingEvenOne) && Self.mayBeOneRows(error):
                for entry in batch { resend(entry) }
            case .failure(let error):
                for (_, item) in batch { fail(item, error) }
            }
        }
    }

    /// Another loop's batch was answered and this store is next. The hop may come late: the
    /// turn may have been taken (by `sendBatches`) and even left since.
    private func handedTurn() {
        if holdsTurn { return }
        if claims.isEmpty && completions.isEmpty { turn?.leave(member) } else { sendBatches() }
    }

    /// Lets the next loop in line send (or frees the turn): a loop with more to send asks again.
    private func leaveTurn() {
        guard holdsTurn else { return }
        holdsTurn = false
        turn?.leave(member)
    }

    private static func mayBeOneRows(_ error: LongTermStoreError) -> Bool {
        guard case .server = error else { return false }
        return error.failure == .refused && !error.isMisconfiguration
    }

    /// The key a batch statement returns first in each row.
    private static func key(of row: PostgresRow) -> String? {
        (try? row.decode(ByteBuffer.self)).map { String(buffer: $0) }
    }

    /// A completion whose claim is no longer ours as it was (expired and taken over, or swept):
    /// the full statement decides, owner-checked.
    private func completeAlone(key: String, _ pending: PendingCompletion) {
        let binds = [
            PostgresData(string: key), PostgresData(bytes: pending.owner), PostgresData(bytes: pending.fingerprint),
            PostgresData(bytes: pending.encoded), PostgresData(int64: pending.retentionMs), PostgresData(int64: pending.lockEndMs),
        ]
        run(.complete, binds) { pending.completion($0.map { !$0.isEmpty }) }
    }

    func release(key: String, owner: [UInt8], completion: @escaping (Result<Bool, LongTermStoreError>) -> Void) {
        run(.release, [PostgresData(string: key), PostgresData(bytes: owner)]) { completion($0.map { !$0.isEmpty }) }
    }

    func withdrawUnanswered(
        key: String, owner: [UInt8], deadlineMs: Int64, completion: @escaping (Result<Bool?, LongTermStoreError>) -> Void
    ) {
        run(.withdrawUnanswered, [PostgresData(string: key), PostgresData(bytes: owner), PostgresData(int64: deadlineMs)]) { result in
            completion(result.flatMap { rows in
                // Read as raw bytes: binary, whatever the row description says.
                guard let (due, withdrawn) = try? rows.first?.decode((ByteBuffer, ByteBuffer).self),
                    let isDue = Self.boolean(due), let wasWithdrawn = Self.boolean(withdrawn)
                else {
                    return .failure(.malformedRecord("the withdrawal returned no answer"))
                }
                return .success(isDue ? wasWithdrawn : nil)
            })
        }
    }

    /// A boolean column, binary (one byte, 0 or 1) or text (`t` or `f`).
    private static func boolean(_ buffer: ByteBuffer) -> Bool? {
        guard buffer.readableBytes == 1, let byte = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        switch byte {
        case 1, UInt8(ascii: "t"): return true
        case 0, UInt8(ascii: "f"): return false
        default: return nil
        }
    }

    func inspect(key: String, completion: @escaping (Result<HeldRecord?, LongTermStoreError>) -> Void) {
        run(.inspect, [PostgresData(string: key)]) { result in
            completion(result.flatMap { rows in
                guard let row = rows.first else { return .success(nil) }
                do {
                    var (owner, fingerprint, record, expiresAt) = try row.decode((ByteBuffer, ByteBuffer, ByteBuffer?, String).self)
                    guard let expiresAtMs = Int64(expiresAt) else { throw LongTermStoreError.malformedRecord("expiry \(expiresAt)") }
                    let held: IdempotencyRecord
                    if let record {
                        held = try IdempotencyRecord.decode(record)
                    } else {
                        let owner = owner.readBytes(length: owner.readableBytes) ?? []
                        let fingerprint = fingerprint.readBytes(length: fingerprint.readableBytes) ?? []
                        guard owner.count == IdempotencyRecord.ownerLength, fingerprint.count == IdempotencyRecord.fingerprintLength else {
                            throw LongTermStoreError.malformedRecord("owner or fingerprint of the wrong length")
                        }
                        held = IdempotencyRecord(owner: owner, fingerprint: fingerprint, state: .inFlight)
                    }
                    return .success(HeldRecord(record: held, expiresAtMs: expiresAtMs))
                } catch let error as LongTermStoreError {
                    return .failure(error)
                } catch {
                    return .failure(.malformedRecord(String(reflecting: error)))
                }
            })
        }
    }

    func forget(
        key: String, force: Bool, tombstoneOwner: [UInt8], completion: @escaping (Result<ForgetResult, LongTermStoreError>) -> Void
    ) {
        run(.forget, [PostgresData(string: key), PostgresData(bytes: tombstoneOwner), PostgresData(bool: force)]) { result in
            completion(result.flatMap { rows in
                guard let text = try? rows.first?.decode(String.self), let outcome = ForgetResult(rawValue: text) else {
                    return .failure(.malformedRecord("the delete returned no answer"))
                }
                return .success(outcome)
            })
        }
    }

    func sweep(limit: Int, completion: @escaping (Result<Int, LongTermStoreError>) -> Void) {
        run(.sweep, [PostgresData(int64: Int64(limit))]) { completion($0.map(\.count)) }
    }

    func ping(completion: @escaping (Result<Void, LongTermStoreError>) -> Void) {
        run(.ping, []) { completion($0.map { _ in }) }
    }

    /// What waits goes out at once and fails (no connection): no loop waits for the turn again.
    func close() {
        turn?.close()
        connections.close()
        sendBatches()
    }

    /// Runs one statement and records its latency and any failure.
    private func run(
        _ statement: PostgresConnections.Statement, _ binds: [PostgresData],
        completion: @escaping (Result<[PostgresRow], LongTermStoreError>) -> Void
    ) {
        let started = NIODeadline.now()
        connections.execute(statement, binds) { result in
            self.metrics.postgresStatement(since: started)
            if case .failure = result { self.metrics.postgresFailed() }
            completion(result)
        }
    }
}
