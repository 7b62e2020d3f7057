import IdempotencyCore
import NIOCore
import PostgresNIO

/// The long-term store over one loop's PostgreSQL connections; callbacks run on that loop.
final class PostgresRecordStore: LongTermStore {
    private let connections: PostgresConnections
    private let metrics: ProxyMetrics

    init(connections: PostgresConnections, metrics: ProxyMetrics) {
        self.connections = connections
        self.metrics = metrics
    }

    func claim(
        key: String, owner: [UInt8], fingerprint: [UInt8], lockTTLMs: Int64, deadlineMs: Int64,
        completion: @escaping (Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>) -> Void
    ) {
        let binds = [
            PostgresData(string: key), PostgresData(bytes: owner), PostgresData(bytes: fingerprint), PostgresData(int64: lockTTLMs),
            PostgresData(int64: deadlineMs),
        ]
        run(.claim, binds) { result in
            completion(result.flatMap { rows in
                do {
                    return .success(try Self.claimResult(rows, owner: owner))
                } catch let error as LongTermStoreError {
                    return .failure(error)
                } catch {
                    return .failure(.malformedRecord(String(reflecting: error)))
                }
            })
        }
    }

    /// The claim statement's row: ours (claimed; written expired when it ran late), or what
    /// was there.
    private static func claimResult(_ rows: [PostgresRow], owner: [UInt8]) throws -> ProtectedRequestMachine.ClaimAnswer {
        guard let row = rows.first else { throw LongTermStoreError.malformedRecord("the claim returned no row") }
        // The int8 is read as raw bytes: a prepared statement's rows come in binary (as bound)
        // but are described as text, which `Int64` decoding refuses.
        var (rowOwner, rowFingerprint, record, expiresIn) = try row.decode((ByteBuffer, ByteBuffer, ByteBuffer?, ByteBuffer).self)
        guard expiresIn.readableBytes == 8, let expiresInMs = expiresIn.readInteger(as: Int64.self) else {
            throw LongTermStoreError.malformedRecord("the claim returned an expiry of \(expiresIn.readableBytes) bytes")
        }
        let existingOwner = Array(rowOwner.readableBytesView)
        if existingOwner == owner {
            guard expiresInMs > 0 else { throw LongTermStoreError.lateClaim }
            return .claimed
        }
        if let record { return .existing(try IdempotencyRecord.decode(Array(record.readableBytesView)), expiresInMs: expiresInMs) }
        let existingFingerprint = Array(rowFingerprint.readableBytesView)
        guard existingOwner.count == IdempotencyRecord.ownerLength, existingFingerprint.count == IdempotencyRecord.fingerprintLength else {
            throw LongTermStoreError.malformedRecord("owner or fingerprint of the wrong length")
        }
        return .existing(IdempotencyRecord(owner: existingOwner, fingerprint: existingFingerprint, state: .inFlight), expiresInMs: expiresInMs)
    }

    func complete(
        key: String, record: IdempotencyRecord, retentionMs: Int64, lockEndMs: Int64,
        completion: @escaping (Result<Bool, LongTermStoreError>) -> Void
    ) {
        let binds = [
            PostgresData(string: key), PostgresData(bytes: record.owner), PostgresData(bytes: record.fingerprint),
            PostgresData(bytes: record.encoded()), PostgresData(int64: retentionMs), PostgresData(int64: lockEndMs),
        ]
        run(.complete, binds) { completion($0.map { !$0.isEmpty }) }
    }

    func release(key: String, owner: [UInt8], completion: @escaping (Result<Bool, LongTermStoreError>) -> Void) {
        run(.release, [PostgresData(string: key), PostgresData(bytes: owner)]) { completion($0.map { !$0.isEmpty }) }
    }

    func withdrawUnanswered(
        key: String, owner: [UInt8], deadlineMs: Int64, completion: @escaping (Result<Bool?, LongTermStoreError>) -> Void
    ) {
        run(.withdrawUnanswered, [PostgresData(string: key), PostgresData(bytes: owner), PostgresData(int64: deadlineMs)]) { result in
            completion(result.flatMap { rows in
                // Read as raw bytes, as the claim's integer is (a prepared statement's rows are
                // binary but described as text).
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
                        held = try IdempotencyRecord.decode(Array(record.readableBytesView))
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

    func close() { connections.close() }

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
