import IdempotencyCore
import IdempotencyScripts
import NIOCore
import RedisClient

/// The record operations of the protocol over one loop's Redis connection (or cluster client),
/// as Lua scripts. Callbacks run on that loop.
final class IdempotencyStore: RecordStore {
    private let redis: any RedisCommands
    private let metrics: ProxyMetrics
    /// How releases wake waiting retries (what the loop's subscriber hears).
    private let publishCommand: String
    /// How completions do: the same, or not at all on a proxy that lets no retry wait; a retry
    /// waiting on another proxy is then woken by its own poll.
    private let completionWakeUp: CompletionWakeUp

    init(redis: any RedisCommands, metrics: ProxyMetrics, publishCommand: String, wakeOnCompletion: Bool) {
        self.redis = redis
        self.metrics = metrics
        self.publishCommand = publishCommand
        completionWakeUp = wakeOnCompletion ? .publish(publishCommand) : .nobody
    }

    func claim(
        key: String,
        record: IdempotencyRecord,
        lockTTLMs: Int64,
        deadlineMs: Int64,
        completion: @escaping (Result<ProtectedRequestMachine.ClaimAnswer, StoreError>) -> Void
    ) {
        let arguments: [RedisArgument] = [.bytes(record.encoded()), .string(String(lockTTLMs)), .string(String(deadlineMs))]
        run(.claim, key: key, arguments: arguments) { result in
            completion(result.flatMap { reply in
                switch reply {
                case .integer(1):
                    return .success(.claimed)
                case .integer(2):
                    return .failure(.lateClaim)
                case .bulk(let buffer):
                    do {
                        let existing = try IdempotencyRecord.decode(buffer)
                        // Our own claim, from an earlier try whose answer never came: ours, as
                        // PostgreSQL's claim says too.
                        if existing.owner == record.owner && existing.state == .inFlight { return .success(.claimed) }
                        return .success(.existing(existing))
                    } catch {
                        return .failure(.malformedRecord("\(error)"))
                    }
                case .null:
                    // The record expired between SET NX and GET inside the script: cannot
                    // happen atomically, but never treat it as a claim.
                    return .failure(.redis(.unexpectedReply("claim: the script returned nil")))
                default:
                    return .failure(.redis(.unexpectedReply("claim: \(reply)")))
                }
            })
        }
    }

    func complete(
        key: String,
        owner: [UInt8],
        record: IdempotencyRecord,
        responseTTLMs: Int64,
        lockEndMs: Int64,
        completion: @escaping (Result<CompleteResult, StoreError>) -> Void
    ) {
        let arguments: [RedisArgument] = [
            .bytes(owner), .bytes(record.encoded()), .string(String(responseTTLMs)), .string(completionWakeUp.argument),
            .string(String(lockEndMs)),
        ]
        run(.complete, key: key, arguments: arguments) { result in
            completion(result.flatMap { reply in
                switch reply {
                case .integer(1): return .success(.stored)
                case .integer(2): return .success(.storedAfterExpiry)
                case .integer(0): return .success(.ownedByAnother)
                default: return .failure(.redis(.unexpectedReply("complete: \(reply)")))
                }
            })
        }
    }

    func release(
        key: String, owner: [UInt8], wakeWaiters: Bool, completion: @escaping (Result<Bool, StoreError>) -> Void
    ) {
        let wakeUp = wakeWaiters ? CompletionWakeUp.publish(publishCommand) : .nobody
        run(.release, key: key, arguments: [.bytes(owner), .string(wakeUp.argument)]) { result in
            completion(result.map { $0 == .integer(1) })
        }
    }

    func withdrawUnanswered(
        key: String, owner: [UInt8], deadlineMs: Int64, completion: @escaping (Result<Bool?, StoreError>) -> Void
    ) {
        let arguments: [RedisArgument] = [.bytes(owner), .string(publishCommand), .string(String(deadlineMs))]
        run(.release, key: key, arguments: arguments) { result in
            completion(result.map { $0 == .integer(-1) ? nil : $0 == .integer(1) })
        }
    }

    /// `WAIT replicas timeout`, sent to the server that holds `key` (in a cluster, the one our
    /// claim went to).
    func waitForReplicas(
        _ count: Int, key: String, timeoutMs: Int64, completion: @escaping (Result<Int, StoreError>) -> Void
    ) {
        let wait: [RedisArgument] = ["WAIT", RedisArgument(count), .string(String(timeoutMs))]
        timed({ self.redis.send(wait, key: .string(key), completion: $0) }) { result in
            completion(result.flatMap { reply in
                guard case .integer(let n) = reply else { return .failure(.redis(.unexpectedReply("WAIT: \(reply)"))) }
                return .success(Int(n))
            })
        }
    }

    func inspect(key: String, completion: @escaping (Result<HeldRecord?, StoreError>) -> Void) {
        run(.inspect, key: key, arguments: []) { result in
            completion(result.flatMap { reply in
                guard case .array(let parts) = reply, parts.count == 2, case .integer(let pttl) = parts[1] else {
                    return .failure(.redis(.unexpectedReply("inspect: \(reply)")))
                }
                guard case .bulk(let buffer) = parts[0] else { return .success(nil) }
                let bytes = Array(buffer.readableBytesView)
                if bytes.count > 1 && bytes[1] == IdempotencyRecord.tombstoneState { return .success(nil) }
                do {
                    let record = try IdempotencyRecord.decode(bytes)
                    return .success(HeldRecord(record: record, expiresAtMs: pttl < 0 ? nil : WallClock.milliseconds() + pttl))
                } catch {
                    return .failure(.malformedRecord("\(error)"))
                }
            })
        }
    }

    func forget(
        key: String, force: Bool, tombstoneOwner: [UInt8], completion: @escaping (Result<ForgetResult, StoreError>) -> Void
    ) {
        let arguments: [RedisArgument] = [
            .string(force ? "force" : "keep"), .bytes(IdempotencyRecord.tombstone(owner: tombstoneOwner)), .string(publishCommand),
        ]
        run(.forget, key: key, arguments: arguments) { result in
            completion(result.flatMap { reply in
                switch reply {
                case .integer(0): return .success(.absent)
                case .integer(1): return .success(.completed)
                case .integer(2): return .success(.inFlight)
                case .integer(3): return .success(.inFlightForced)
                default: return .failure(.redis(.unexpectedReply("forget: \(reply)")))
                }
            })
        }
    }

    func ping(completion: @escaping (Result<Void, StoreError>) -> Void) {
        redis.ping { completion($0.mapError { .redis($0) }) }
    }

    var serverInUse: String? { redis.serverInUse }

    func close() { redis.close() }

    private func run(
        _ script: RedisScript,
        key: String,
        arguments: [RedisArgument],
        completion: @escaping (Result<RedisReply, StoreError>) -> Void
    ) {
        timed({ self.redis.run(script, keys: [.string(key)], arguments: arguments, completion: $0) }, completion: completion)
    }

    /// Sends one command, records its latency, and turns error replies into failures.
    private func timed(
        _ send: (@escaping RedisCompletion) -> Void,
        completion: @escaping (Result<RedisReply, StoreError>) -> Void
    ) {
        let started = NIODeadline.now()
        send { result in
            self.metrics.redisCommand(since: started)
            switch result {
            case .success(.error(let message)): completion(.failure(.redis(.server(message))))
            case .success(let reply): completion(.success(reply))
            case .failure(let error): completion(.failure(.redis(error)))
            }
        }
    }
}
