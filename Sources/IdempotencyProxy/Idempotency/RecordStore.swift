import IdempotencyCore
import RedisClient

/// The record operations a protected request needs (docs/behaviour.md §3, rules 4, 5, 8), answered on the
/// request's event loop. `IdempotencyStore` answers them from Redis; a test can answer them
/// from a script.
protocol RecordStore: AnyObject {
    /// `deadlineMs` (milliseconds since the epoch): when the claimer stops waiting for the
    /// answer; a claim that runs later writes nothing and fails with `.lateClaim`.
    func claim(
        key: String, record: IdempotencyRecord, lockTTLMs: Int64, deadlineMs: Int64,
        completion: @escaping (Result<ProtectedRequestMachine.ClaimAnswer, StoreError>) -> Void)

    /// `lockEndMs`: the latest the claim's lock can end (ms since the epoch); a key gone before
    /// then is not written (`RedisScript.complete`).
    func complete(
        key: String, owner: [UInt8], record: IdempotencyRecord, responseTTLMs: Int64, lockEndMs: Int64,
        completion: @escaping (Result<CompleteResult, StoreError>) -> Void)

    /// Result: true when the claim was ours and is gone. `wakeWaiters`: announce it to the
    /// retries waiting for the key.
    func release(
        key: String, owner: [UInt8], wakeWaiters: Bool, completion: @escaping (Result<Bool, StoreError>) -> Void)

    /// Withdraws a claim whose answer never came, once Redis's clock has passed its
    /// `deadlineMs` (before that it may still run): owner-checked, in flight only, waking the
    /// retries waiting for the key. Result: nil while the deadline has not passed in Redis;
    /// else whether the claim was there and is gone.
    func withdrawUnanswered(
        key: String, owner: [UInt8], deadlineMs: Int64, completion: @escaping (Result<Bool?, StoreError>) -> Void)

    /// How many replicas acknowledged the writes so far, waiting up to `timeoutMs` for `count`.
    func waitForReplicas(
        _ count: Int, key: String, timeoutMs: Int64, completion: @escaping (Result<Int, StoreError>) -> Void)

    /// The records API: what Redis holds under `key` (a tombstone is nothing).
    func inspect(key: String, completion: @escaping (Result<HeldRecord?, StoreError>) -> Void)

    /// The records API's delete (`RedisScript.forget`): a tombstone owned by `tombstoneOwner`
    /// replaces an in-flight claim when `force`.
    func forget(
        key: String, force: Bool, tombstoneOwner: [UInt8], completion: @escaping (Result<ForgetResult, StoreError>) -> Void)

    /// Succeeds when every server the store needs answers (`/readyz`).
    func ping(completion: @escaping (Result<Void, StoreError>) -> Void)

    /// The Redis server in use when it may change (a Sentinel's master), for `/readyz`.
    var serverInUse: String? { get }

    func close()
}

enum StoreError: Error, CustomStringConvertible {
    case redis(RedisError)
    case malformedRecord(String)
    /// Redis ran the claim after its deadline and wrote nothing: it was stalled, or its clock
    /// is ahead of this host's by more than `redis_timeout`.
    case lateClaim

    /// What this means to the request machine. Any Redis error reply is taken as passing (a
    /// `READONLY` or `LOADING` during a failover or restart); only a command never sent, or
    /// one the server refused, certainly did not run.
    var failure: ProtectedRequestMachine.StoreFailure {
        switch self {
        case .redis(.notConnected), .redis(.server): return .unavailable
        case .redis(.timeout): return .timedOut
        case .redis: return .interrupted
        case .malformedRecord: return .unreadable
        case .lateClaim: return .refused
        }
    }

    var description: String {
        switch self {
        case .redis(let e): return e.description
        case .malformedRecord(let m): return "malformed idempotency record in Redis: \(m)"
        case .lateClaim: return "Redis ran the claim after its deadline (a stall, or its clock ahead of this host's); nothing was claimed"
        }
    }
}

enum CompleteResult: Equatable {
    case stored
    case storedAfterExpiry
    case ownedByAnother
}
