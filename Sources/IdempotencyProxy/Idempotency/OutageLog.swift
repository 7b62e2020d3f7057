import Logging
import NIOConcurrencyHelpers

/// Logs once per outage that a store is down and what the proxy does instead, and once that
/// it answers again, however many requests and event loops see it (SPEC §8, operations).
final class OutageLog: Sendable {
    private let store: String
    private let down = NIOLockedValueBox(false)

    init(store: String) { self.store = store }

    func failed(_ error: any Error, instead: String, logger: Logger) {
        let first = down.withLockedValue { down in
            defer { down = true }
            return !down
        }
        if first { logger.warning("\(store) unavailable; \(instead)", metadata: ["error": "\(error)"]) }
    }

    func answered(logger: Logger) {
        let wasDown = down.withLockedValue { down in
            defer { down = false }
            return down
        }
        if wasDown { logger.info("\(store) answers again; requests are protected by it") }
    }
}
