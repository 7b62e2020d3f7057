import IdempotencyCore
import Logging
import NIOCore

/// Withdraws, in the background, the claims whose answer never came (a stalled or lost store;
/// `Reply.claimsToWithdraw`), so that one that lands late never holds its key at 409 until
/// lock_ttl. One per event loop; the client was answered long before.
///
/// A withdrawal is owner-checked and in flight only, so it never removes another request's
/// claim, and it is done only once the store's own clock is past the claim's deadline: from
/// then on the claim has run or never will (it refuses itself after its deadline), so the
/// withdrawal certainly comes after it, whatever connection either went on. Until then, and
/// while the store does not answer, it is tried again; after the claim's own lock_ttl there is
/// nothing left to withdraw.
final class UnansweredClaims {
    struct Claim {
        let store: ProtectedRequestMachine.Store
        let key: String
        let owner: [UInt8]
        /// The claim's deadline, in ms since the epoch.
        let deadlineMs: Int64
        /// Past this the claim has expired on its own.
        let giveUpAt: NIODeadline
    }

    /// 200 ms doubling to 2 s: a store back from a stall is asked again within a second or two,
    /// and one that stays away is not flooded by every request that met it.
    static func retryDelay(afterAttempt attempt: Int) -> TimeAmount { .milliseconds(min(2_000, 200 << min(attempt - 1, 4))) }

    private let eventLoop: any EventLoop
    private let store: any RecordStore
    private let longTermStore: (any LongTermStore)?
    private let logger: Logger
    private var closed = false

    init(eventLoop: any EventLoop, store: any RecordStore, longTermStore: (any LongTermStore)?, logger: Logger) {
        self.eventLoop = eventLoop
        self.store = store
        self.longTermStore = longTermStore
        self.logger = logger
    }

    func withdraw(_ claim: Claim) { attempt(claim, number: 1) }

    func close() { closed = true }

    private func attempt(_ claim: Claim, number: Int) {
        guard !closed else { return }
        let done: (Result<Bool?, any Error>) -> Void = { result in
            switch result {
            case .success(.some(let withdrawn)):
                if withdrawn {
                    self.logger.info(
                        "withdrew a claim that landed after its request stopped waiting for it",
                        metadata: ["store": "\(claim.store.rawValue)", "record": "\(claim.key)"])
                }
            case .success(.none), .failure:
                // The deadline has not passed in the store yet, or it does not answer.
                guard NIODeadline.now() < claim.giveUpAt else { return }
                self.eventLoop.assumeIsolated().scheduleTask(in: Self.retryDelay(afterAttempt: number)) {
                    self.attempt(claim, number: number + 1)
                }
            }
        }
        switch claim.store {
        case .redis:
            store.withdrawUnanswered(key: claim.key, owner: claim.owner, deadlineMs: claim.deadlineMs) { done($0.mapError { $0 }) }
        case .postgres:
            guard let longTermStore else { return }
            longTermStore.withdrawUnanswered(key: claim.key, owner: claim.owner, deadlineMs: claim.deadlineMs) {
                done($0.mapError { $0 })
            }
        }
    }
}
