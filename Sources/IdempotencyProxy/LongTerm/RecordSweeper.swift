import Logging
import NIOCore

/// Deletes expired rows of the long-term store in the background (docs/behaviour.md §3, long-term store): every
/// `interval`, batches of `batchSize` until a batch comes back short (or `maxBatches`, so one
/// tick never runs long). The lookups check the expiry themselves; the sweep only keeps the
/// table small. Every proxy runs one, on a connection of its own; the statement's advisory
/// lock lets one sweep at a time.
final class RecordSweeper {
    static let batchSize = 1_000
    static let maxBatches = 50

    private let eventLoop: any EventLoop
    private let store: any LongTermStore
    private let interval: TimeAmount
    private let logger: Logger
    private var next: Scheduled<Void>?
    private var stopped = false

    init(eventLoop: any EventLoop, store: any LongTermStore, interval: TimeAmount, logger: Logger) {
        self.eventLoop = eventLoop
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    /// The next tick is scheduled when one ends, so ticks never overlap.
    func start() {
        guard !stopped else { return }
        next = eventLoop.assumeIsolated().scheduleTask(in: interval) {
            self.sweep(batch: 1, deleted: 0)
        }
    }

    /// Stops and closes the sweeper's own store.
    func stop() {
        stopped = true
        next?.cancel()
        next = nil
        store.close()
    }

    private func sweep(batch: Int, deleted: Int) {
        store.sweep(limit: Self.batchSize) { result in
            switch result {
            case .success(let count) where count == Self.batchSize && batch < Self.maxBatches:
                self.sweep(batch: batch + 1, deleted: deleted + count)
            case .success(let count):
                if deleted + count > 0 { self.logger.debug("expired records deleted", metadata: ["count": "\(deleted + count)"]) }
                self.start()
            case .failure(let error):
                self.logger.debug("sweeping expired records failed", metadata: ["error": "\(error)"])
                self.start()
            }
        }
    }
}
