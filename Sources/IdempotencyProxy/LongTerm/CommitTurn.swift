import NIOConcurrencyHelpers
import NIOCore

/// Who may send the next batch of claims or completions, in line: one member at a time, the
/// others in the order they asked. A turn held longer than `patience` (a statement stuck on a
/// locked row or a broken connection) no longer holds the others back: who asks then goes
/// around it, as if there were no turn, until it is given up. Pure: `CommitTurn` shares it
/// between event loops; times are in nanoseconds of one clock.
struct CommitTurnLine {
    private var holder: Int?
    /// When `holder` was handed the turn.
    private var since: UInt64 = 0
    private var waiting: [Int] = []
    /// Sending beside a holder that kept the turn past `patience`.
    private var around: Set<Int> = []
    let patience: UInt64

    init(patience: UInt64) { self.patience = patience }

    /// True: `member` may send (the turn was free, or already its, or held too long). False:
    /// `member` is in line (once) and is handed the turn by a later `leave`.
    mutating func take(_ member: Int, now: UInt64) -> Bool {
        if holder == nil || holder == member {
            if holder == nil { since = now }
            holder = member
            return true
        }
        if around.contains(member) { return true }
        // `now` may be a moment older than `since`: read before another member took the lock.
        if now > since && now - since > patience {
            waiting.removeAll { $0 == member }
            around.insert(member)
            return true
        }
        if !waiting.contains(member) { waiting.append(member) }
        return false
    }

    /// `member` has nothing out: out of line, and a turn it held passes to the first in line.
    /// The member now holding the turn when it changed hands (it must be told); nil otherwise.
    mutating func leave(_ member: Int, now: UInt64) -> Int? {
        guard holder == member else {
            waiting.removeAll { $0 == member }
            around.remove(member)
            return nil
        }
        holder = waiting.isEmpty ? nil : waiting.removeFirst()
        since = now
        return holder
    }
}

/// One statement of claims or completions out at a time for the event loops that share it (a
/// pair: `PostgresWiring.loopsPerTurn`), not one per loop: each loop still sends its own batches
/// on its own connection, but only while it holds the turn, so that whatever queues on the other
/// meanwhile waits for the next statements, which carry more each. What the proxy and
/// PostgreSQL spend is paid per statement (docs/performance.md, "Loops taking turns"). A loop
/// takes a free turn at once, so a lone request waits for nothing; a busy loop hands it to the
/// next in line when its batch is answered, one thread hop per statement. A batch stuck on its
/// connection holds the others back for `patience` (`CommitTurnLine`): a loop in line asks again
/// then (`PostgresRecordStore`).
final class CommitTurn: Sendable {
    private struct State {
        var line: CommitTurnLine
        /// Each member's loop, and what to run there when it is handed the turn.
        var members: [(loop: any EventLoop, handed: NIOLoopBound<() -> Void>)] = []
        /// Shutting down: every member may send, and none is woken on a loop that may be gone.
        var closed = false
    }

    private let state: NIOLockedValueBox<State>
    /// How long a holder keeps the others back: far longer than a statement takes on a busy
    /// server, short beside `postgres_timeout`.
    let patience: TimeAmount

    init(patience: TimeAmount = .milliseconds(100)) {
        self.patience = patience
        state = NIOLockedValueBox(State(line: CommitTurnLine(patience: UInt64(patience.nanoseconds))))
    }

    /// A new member, on `loop`; `handed` runs there when it is handed the turn.
    func join(on loop: any EventLoop, handed: @escaping () -> Void) -> Int {
        let bound = NIOLoopBound(handed, eventLoop: loop)
        return state.withLockedValue { state in
            state.members.append((loop, bound))
            return state.members.count - 1
        }
    }

    /// True when `member` holds the turn now; false when it waits in line.
    func take(_ member: Int) -> Bool {
        let now = NIODeadline.now().uptimeNanoseconds
        return state.withLockedValue { $0.closed || $0.line.take(member, now: now) }
    }

    /// `member` no longer needs the turn; the next in line is handed it, on its loop.
    func leave(_ member: Int) {
        let now = NIODeadline.now().uptimeNanoseconds
        let next = state.withLockedValue { state -> (loop: any EventLoop, handed: NIOLoopBound<() -> Void>)? in
            guard let next = state.line.leave(member, now: now), !state.closed else { return nil }
            return state.members[next]
        }
        guard let next else { return }
        next.loop.execute { next.handed.value() }
    }

    /// At shutdown: nobody waits for the turn again, and nobody is handed it.
    func close() {
        state.withLockedValue { $0.closed = true }
    }
}
