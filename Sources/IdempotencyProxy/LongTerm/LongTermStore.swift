import IdempotencyCore

/// The record operations of the long-term store (docs/behaviour.md §3, long-term store), answered on the request's event
/// loop. `PostgresRecordStore` answers them from PostgreSQL.
protocol LongTermStore: AnyObject {
    /// Claims `key` unless a live claim or record is there; that one is answered instead.
    /// `deadlineMs` (ms since the epoch): a claim that runs later holds nothing (`.lateClaim`).
    /// `retentionMs`: how long the record will be kept, so that the row can be swept after it.
    func claim(
        key: String, owner: [UInt8], fingerprint: [UInt8], lockTTLMs: Int64, retentionMs: Int64, deadlineMs: Int64,
        completion: @escaping (Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>) -> Void)

    /// Owner-checked. Result: false when another request had taken the key over. `lockEndMs`:
    /// the latest the claim's lock can end (ms since the epoch); another owner's expired row,
    /// or none, is written over only after it (`PostgresSQL.complete`).
    func complete(
        key: String, record: IdempotencyRecord, retentionMs: Int64, lockEndMs: Int64,
        completion: @escaping (Result<Bool, LongTermStoreError>) -> Void)

    /// Owner-checked. Result: true when the claim was ours and is gone.
    func release(key: String, owner: [UInt8], completion: @escaping (Result<Bool, LongTermStoreError>) -> Void)

    /// Withdraws a claim whose answer never came, once PostgreSQL's clock has passed its
    /// deadline: owner-checked, in flight only. Result: nil while the deadline has not passed;
    /// else whether the claim was there and is gone.
    func withdrawUnanswered(
        key: String, owner: [UInt8], deadlineMs: Int64, completion: @escaping (Result<Bool?, LongTermStoreError>) -> Void)

    /// Deletes up to `limit` expired rows, if no other proxy is sweeping. Result: how many.
    func sweep(limit: Int, completion: @escaping (Result<Int, LongTermStoreError>) -> Void)

    /// The records API: the live record PostgreSQL holds under `key` (a tombstone is none).
    func inspect(key: String, completion: @escaping (Result<HeldRecord?, LongTermStoreError>) -> Void)

    /// The records API's delete (`PostgresSQL.forget`).
    func forget(
        key: String, force: Bool, tombstoneOwner: [UInt8], completion: @escaping (Result<ForgetResult, LongTermStoreError>) -> Void)

    /// Succeeds when PostgreSQL answers (`/readyz`).
    func ping(completion: @escaping (Result<Void, LongTermStoreError>) -> Void)

    func close()
}
