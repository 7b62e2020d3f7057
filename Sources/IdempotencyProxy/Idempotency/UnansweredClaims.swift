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
/// withdrawal certainly comes after it, whatever connection either went on.
///
/// Each store has one queue, worked a batch at a time: while the store does not answer, or
/// its clock has not passed a deadline yet, one batch waits and is tried again, so a stalled
/// store is not met by every request that found it stalled. The queue is bounded; a claim
/// that cannot wait in it, or whose own lock_ttl has run out before it was withdrawn, is
/// counted in the log instead (it then only lives until its lock_ttl).
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

    /// Withdrawals sent at once to one store.
    static let batchSize = 64
    /// Claims waiting per store and event loop: far more than a stall of a few seconds leaves.
    static let capacity = 10_000

    /// 200 ms doubling to 2 s: a store back from a stall is asked again within a second or two.
    static func retryDelay(afterAttempt attempt: Int) -> TimeAmount { .milliseconds(min(2_000, 200 << min(attempt - 1, 4))) }

    private final class Queue {
        var claims = CircularBuffer<Claim>()
        var working = false
        var failedAttempts = 0
        /// Claims given up on since the last log line.
        var abandoned = 0
    }

    private let eventLoop: any EventLoop
    private let store: any RecordStore
    private let longTermStore: (any LongTermStore)?
    private let logger: Logger
    private let queues: [ProtectedRequestMachine.Store: Queue] = [.redis: Queue(), .postgres: Queue()]
    private var closed = false

    init(eventLoop: any EventLoop, store: any RecordStore, longTermStore: (any LongTermStore)?, logger: Logger) {
        self.eventLoop = eventLoop
        self.store = store
        self.longTermStore = longTermStore
        self.logger = logger
    }

    func withdraw(_ claim: Claim) {
        guard let queue = queues[claim.store], !closed else { return }
        guard queue.claims.count < Self.capacity else {
            queue.abandoned += 1
            return
        }
        queue.claims.append(claim)
        if !queue.working { work(queue, claim.store) }
    }

    func close() { closed = true }

    /// Sends the next batch; carries on at once after a batch that went through, and waits
    /// after one that did not.
    private func work(_ queue: Queue, _ store: ProtectedRequestMachine.Store) {
        let now = NIODeadline.now()
        while let first = queue.claims.first, first.giveUpAt <= now {
            queue.claims.removeFirst()
            queue.abandoned += 1
        }
        if queue.abandoned > 0 {
            logger.warning(
                "claims whose answer never came expire by themselves after lock_ttl instead of being withdrawn",
                metadata: ["store": "\(store.rawValue)", "claims": "\(queue.abandoned)"])
            queue.abandoned = 0
        }
        guard !closed, !queue.claims.isEmpty else {
            queue.working = false
            return
        }
        queue.working = true
        let batch = Array(queue.claims.prefix(Self.batchSize))
        queue.claims.removeFirst(batch.count)
        var remaining = batch.count
        var left: [Claim] = []
        for claim in batch {
            send(claim) { done in
                if !done { left.append(claim) }
                remaining -= 1
                guard remaining == 0 else { return }
                // Not withdrawn yet: back at the front, in order, for the next try.
                for claim in left.reversed() { queue.claims.prepend(claim) }
                if left.isEmpty {
                    queue.failedAttempts = 0
                    self.work(queue, store)
                } else {
                    queue.failedAttempts += 1
                    self.eventLoop.assumeIsolated().scheduleTask(in: Self.retryDelay(afterAttempt: queue.failedAttempts)) {
                        self.work(queue, store)
                    }
                }
            }
        }
    }

    /// One withdrawal; `done` false while the store's clock is short of the deadline or the
    /// store does not answer.
    private func send(_ claim: Claim, done: @escaping (Bool) -> Void) {
        let finished: (Bool?) -> Void = { withdrawn in
            if withdrawn == true {
                self.logger.info(
                    "withdrew a claim that landed after its request stopped waiting for it",
                    metadata: ["store": "\(claim.store.rawValue)", "record": "\(claim.key)"])
            }
            done(withdrawn != nil)
        }
        switch claim.store {
        case .redis:
            store.withdrawUnanswered(key: claim.key, owner: claim.owner, deadlineMs: claim.deadlineMs) {
                finished(try? $0.get())
            }
        case .postgres:
            guard let longTermStore else { return done(true) }
            longTermStore.withdrawUnanswered(key: claim.key, owner: claim.owner, deadlineMs: claim.deadlineMs) {
                finished(try? $0.get())
            }
        }
    }
}
