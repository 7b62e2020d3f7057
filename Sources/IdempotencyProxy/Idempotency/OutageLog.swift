import Atomics
import Logging

/// Logs once per outage that a store is down and what the proxy does instead, and once that
/// it answers again, however many requests and event loops see it (docs/behaviour.md §3, long-term store, operations). Every
/// answer reads one atomic flag; only a change of state writes it.
final class OutageLog: Sendable {
    private let store: String
    private let down = ManagedAtomic(false)

    init(store: String) { self.store = store }

    func failed(_ error: any Error, instead: String, logger: Logger) {
        if down.load(ordering: .relaxed) { return }
        if down.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            logger.warning("\(store) unavailable; \(instead)", metadata: ["error": "\(error)"])
        }
    }

    func answered(logger: Logger) {
        guard down.load(ordering: .relaxed) else { return }
        if down.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged {
            logger.info("\(store) answers again; requests are protected by it")
        }
    }
}
