import IdempotencyCore
import RedisClient

@testable import IdempotencyProxy

/// What the scripted stores were asked, in order, across both: "redis claim",
/// "postgres complete", …
final class StoreJournal {
    private(set) var calls: [String] = []
    func note(_ call: String) { calls.append(call) }
}

/// A store that answers claims from a script (a free key once the script is used up), at once
/// or when the test says, and everything else with success.
final class ScriptedStore: RecordStore {
    /// Where calls are noted beside the long-term store's.
    var journal = StoreJournal()
    var claims: [(IdempotencyRecord) -> ProtectedRequestMachine.ClaimAnswer] = []
    /// Claims wait for `answerHeldClaim`.
    var holdClaims = false
    private var held: [(Result<ProtectedRequestMachine.ClaimAnswer, StoreError>) -> Void] = []
    private(set) var claimsMade = 0
    private(set) var settled: [String] = []
    /// The next claim fails with this.
    var claimFailure: StoreError?
    /// How withdrawals of unanswered claims are answered, in turn (then: withdrawn).
    var withdrawals: [Bool?] = []
    /// The deadlines of the withdrawals asked for.
    private(set) var withdrawalDeadlines: [Int64] = []

    func claim(
        key: String, record: IdempotencyRecord, lockTTLMs: Int64, deadlineMs: Int64,
        completion: @escaping (Result<ProtectedRequestMachine.ClaimAnswer, StoreError>) -> Void
    ) {
        claimsMade += 1
        journal.note("redis claim")
        if let claimFailure {
            self.claimFailure = nil
            return completion(.failure(claimFailure))
        }
        if holdClaims { return held.append(completion) }
        guard !claims.isEmpty else { return completion(.success(.claimed)) }
        completion(.success(claims.removeFirst()(record)))
    }

    func answerHeldClaim(_ result: ProtectedRequestMachine.ClaimAnswer) {
        held.removeFirst()(.success(result))
    }

    func complete(
        key: String, owner: [UInt8], record: IdempotencyRecord, responseTTLMs: Int64, lockEndMs: Int64,
        completion: @escaping (Result<CompleteResult, StoreError>) -> Void
    ) {
        settled.append("complete")
        journal.note("redis complete")
        completion(.success(.stored))
    }

    func release(key: String, owner: [UInt8], wakeWaiters: Bool, completion: @escaping (Result<Bool, StoreError>) -> Void) {
        settled.append(wakeWaiters ? "release" : "withdraw")
        journal.note(wakeWaiters ? "redis release" : "redis withdraw")
        completion(.success(true))
    }

    func withdrawUnanswered(
        key: String, owner: [UInt8], deadlineMs: Int64, completion: @escaping (Result<Bool?, StoreError>) -> Void
    ) {
        withdrawalDeadlines.append(deadlineMs)
        completion(.success(withdrawals.isEmpty ? true : withdrawals.removeFirst()))
    }

    func waitForReplicas(
        _ count: Int, key: String, timeoutMs: Int64, completion: @escaping (Result<Int, StoreError>) -> Void
    ) { completion(.success(count)) }

    /// The records API is not served on an embedded loop.
    func inspect(key: String, completion: @escaping (Result<HeldRecord?, StoreError>) -> Void) {
        completion(.success(nil))
    }

    func forget(
        key: String, force: Bool, tombstoneOwner: [UInt8], completion: @escaping (Result<ForgetResult, StoreError>) -> Void
    ) { completion(.success(.absent)) }

    func ping(completion: @escaping (Result<Void, StoreError>) -> Void) { completion(.success(())) }

    let serverInUse: String? = nil

    func close() {}
}

/// Pub/Sub that never delivers: waiting retries depend on their poll.
final class SilentPubSub: RedisPubSub {
    let publishCommand = "PUBLISH"
    var onRefused: ((String) -> Void)?
    func subscribe(_ channel: String, listener: @escaping () -> Void) -> Int { 0 }
    func unsubscribe(_ channel: String, id: Int) {}
    func close() {}
}

/// A long-term store that answers from a script (claimed, stored, released once the script is
/// used up), so that the PostgreSQL rows of the failure matrix run on an embedded loop.
final class ScriptedLongTermStore: LongTermStore {
    let journal: StoreJournal
    /// How claims are answered, in turn; given the claim's owner and fingerprint.
    var claims: [(_ owner: [UInt8], _ fingerprint: [UInt8]) -> Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>] = []
    /// How completions and releases are answered, in turn.
    var completions: [Result<Bool, LongTermStoreError>] = []
    var releases: [Result<Bool, LongTermStoreError>] = []
    /// The deadlines of the withdrawals asked for (each withdraws the claim).
    private(set) var withdrawalDeadlines: [Int64] = []

    init(journal: StoreJournal) {
        self.journal = journal
    }

    func claim(
        key: String, owner: [UInt8], fingerprint: [UInt8], lockTTLMs: Int64, retentionMs: Int64, deadlineMs: Int64,
        completion: @escaping (Result<ProtectedRequestMachine.ClaimAnswer, LongTermStoreError>) -> Void
    ) {
        journal.note("postgres claim")
        completion(claims.isEmpty ? .success(.claimed) : claims.removeFirst()(owner, fingerprint))
    }

    func complete(
        key: String, record: IdempotencyRecord, retentionMs: Int64, lockEndMs: Int64,
        completion: @escaping (Result<Bool, LongTermStoreError>) -> Void
    ) {
        journal.note("postgres complete")
        completion(completions.isEmpty ? .success(true) : completions.removeFirst())
    }

    func release(key: String, owner: [UInt8], completion: @escaping (Result<Bool, LongTermStoreError>) -> Void) {
        journal.note("postgres release")
        completion(releases.isEmpty ? .success(true) : releases.removeFirst())
    }

    func withdrawUnanswered(
        key: String, owner: [UInt8], deadlineMs: Int64, completion: @escaping (Result<Bool?, LongTermStoreError>) -> Void
    ) {
        journal.note("postgres withdraw")
        withdrawalDeadlines.append(deadlineMs)
        completion(.success(true))
    }

    func sweep(limit: Int, completion: @escaping (Result<Int, LongTermStoreError>) -> Void) { completion(.success(0)) }

    /// The records API is not served on an embedded loop.
    func inspect(key: String, completion: @escaping (Result<HeldRecord?, LongTermStoreError>) -> Void) {
        completion(.success(nil))
    }

    func forget(
        key: String, force: Bool, tombstoneOwner: [UInt8], completion: @escaping (Result<ForgetResult, LongTermStoreError>) -> Void
    ) { completion(.success(.absent)) }

    func ping(completion: @escaping (Result<Void, LongTermStoreError>) -> Void) { completion(.success(())) }

    func close() {}
}
