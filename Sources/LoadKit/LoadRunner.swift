import NIOCore
import NIOHTTP1
import NIOPosix

/// Sends N protected POSTs with fresh keys from C concurrent clients, loses some responses on
/// purpose and retries them with the same key and body, and accounts for every key.
public struct LoadRunner: Sendable {
    public let options: LoadOptions

    public init(options: LoadOptions) {
        self.options = options
    }

    public func run(group: any EventLoopGroup) async throws -> LoadReport {
        let before = try await stats(group: group)
        let clock = ContinuousClock()
        let started = clock.now
        let counter = KeyCounter(total: options.requests)
        var report = LoadReport()
        let runID = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let progressTask = options.progress ? Task { await printProgress(counter: counter, started: started) } : nil
        try await withThrowingTaskGroup(of: [(KeyLedger, UInt64?)].self) { tasks in
            for worker in 0..<max(1, min(options.concurrency, options.requests)) {
                tasks.addTask {
                    await LoadClient(options: options, group: group, worker: worker).run(counter: counter, runID: runID)
                }
            }
            for try await results in tasks {
                for (ledger, latency) in results { report.add(ledger, finalLatencyMicros: latency) }
            }
        }
        progressTask?.cancel()
        let elapsed = clock.now - started
        report.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        if let before, let after = try await stats(group: group) {
            report.upstreamExecutions = after.charges - before.charges
            report.upstreamDistinctKeys = after.distinctKeys - before.distinctKeys
        }
        return report
    }

    /// A body unique to the key, `size` bytes long.
    static func body(index: Int, size: Int) -> [UInt8] {
        var bytes = Array("amount=\(index % 1000 + 1)&n=\(index)&pad=".utf8)
        while bytes.count < size { bytes.append(UInt8(ascii: "a") + UInt8(bytes.count % 26)) }
        return Array(bytes.prefix(max(size, 0)))
    }

    private func stats(group: any EventLoopGroup) async throws -> (charges: Int, distinctKeys: Int)? {
        guard let target = options.statsTarget else { return nil }
        let answer = try await LoadClient(options: options, group: group, worker: -1).get(target)
        let text = String(decoding: answer.body, as: UTF8.self)
        guard let charges = Self.jsonInt(text, "charges"), let keys = Self.jsonInt(text, "distinct_keys") else {
            throw LoadError("unexpected stats answer: \(text)")
        }
        return (charges, keys)
    }

    /// A whole-number member of a flat JSON object, without a JSON library.
    static func jsonInt(_ text: String, _ name: String) -> Int? {
        let needle = Array("\"\(name)\"".utf8)
        let bytes = Array(text.utf8)
        guard bytes.count >= needle.count,
            let start = (0...(bytes.count - needle.count)).first(where: { Array(bytes[$0..<$0 + needle.count]) == needle })
        else { return nil }
        let rest = bytes[(start + needle.count)...].drop { $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: " ") }
        return Int(String(decoding: rest.prefix { $0 >= 48 && $0 <= 57 }, as: UTF8.self))
    }

    private func printProgress(counter: KeyCounter, started: ContinuousClock.Instant) async {
        let clock = ContinuousClock()
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let done = await counter.done
            let elapsed = clock.now - started
            print("  … \(done)/\(options.requests) keys after \(elapsed.components.seconds) s")
        }
    }
}

public struct LoadError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Hands out key indexes to workers.
actor KeyCounter {
    private var nextIndex = 0
    private let total: Int
    private(set) var done = 0

    init(total: Int) { self.total = total }

    func next() -> Int? {
        guard nextIndex < total else { return nil }
        defer { nextIndex += 1 }
        return nextIndex
    }

    func finished() { done += 1 }
}
