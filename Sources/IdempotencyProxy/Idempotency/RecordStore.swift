import IdempotencyCore
import RedisClient

/// The record operations a protected request needs (SPEC §3 rules 4, 5, 8), answered on the
/// request's event loop. `IdempotencyStore` answers them from Redis; a test can answer them
/// from a script.
protocol RecordStore: AnyObject {
    func claim(
        key: String, record: IdempotencyRecord, lockTTLMs: Int64,
        completion: @escaping (Result<ProtectedRequestMachine.ClaimResult, StoreError>) -> Void)

    func complete(
        key: String, owner: [UInt8], record: IdempotencyRecord, responseTTLMs: Int64,
        completion: @escaping (Result<CompleteResult, StoreError>) -> Void)

    /// Result: true when the claim was ours and is gone. `wakeWaiters`: announce it to the
    /// retries waiting for the key.
    func release(
        key: String, owner: [UInt8], wakeWaiters: Bool, completion: @escaping (Result<Bool, StoreError>) -> Void)

    /// How many replicas acknowledged the writes so far, waiting up to `timeoutMs` for `count`.
    func waitForReplicas(
        _ count: Int, key: String, timeoutMs: Int64, completion: @escaping (Result<Int, StoreError>) -> Void)

    /// Succeeds when every server the store needs answers (`/readyz`).
    func ping(completion: @escaping (Result<Void, StoreError>) -> Void)

    func close()
}

enum StoreError: Error, CustomStringConvertible {
    case redis(RedisError)
    case malformedRecord(String)

    var description: String {
        switch self {
        case .redis(let e): return e.description
        case .malformedRecord(let m): return "malformed idempotency record in Redis: \(m)"
        }
    }
}

enum CompleteResult: Equatable {
    case stored
    case storedAfterExpiry
    case ownedByAnother
}
