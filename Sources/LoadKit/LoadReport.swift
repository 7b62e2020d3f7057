import Histogram

/// The outcome of one load run, and its verdict.
public struct LoadReport: Sendable {
    public var keys = 0
    public var attempts = 0
    public var losses = 0
    public var retries = 0
    public var replays = 0
    public var transportErrors = 0
    public var finalStatuses: [Int: Int] = [:]
    public var unanswered = 0
    public var mismatches = 0
    public var seconds = 0.0
    /// Latency of the attempt that produced each key's final answer, in microseconds.
    public var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    /// From the upstream's `/stats`, when asked: executions and distinct keys during the run.
    public var upstreamExecutions: Int?
    public var upstreamDistinctKeys: Int?

    public init() {}

    public mutating func add(_ ledger: KeyLedger, finalLatencyMicros: UInt64?) {
        keys += 1
        attempts += ledger.attempts
        losses += ledger.losses
        retries += max(ledger.attempts - 1, 0)
        transportErrors += ledger.errors
        replays += ledger.finalAnswers.filter(\.replayed).count
        if let final = ledger.final {
            finalStatuses[final.status, default: 0] += 1
        } else {
            unanswered += 1
        }
        if ledger.hasMismatch { mismatches += 1 }
        if let finalLatencyMicros { _ = latency.record(finalLatencyMicros) }
    }

    /// Executions beyond one per key (needs `--stats-url`).
    public var duplicates: Int? {
        guard let executions = upstreamExecutions, let distinct = upstreamDistinctKeys else { return nil }
        return max(executions - distinct, 0)
    }

    /// Keys the upstream never executed although the run sent them (needs `--stats-url`).
    public var missing: Int? {
        upstreamDistinctKeys.map { max(keys - $0, 0) }
    }

    public var passed: Bool {
        unanswered == 0 && mismatches == 0 && (duplicates ?? 0) == 0 && (missing ?? 0) == 0
    }

    public var throughput: Double { seconds > 0 ? Double(keys) / seconds : 0 }

    public func percentileMs(_ p: Double) -> Double {
        latency.totalCount == 0 ? 0 : Double(latency.valueAtPercentile(p)) / 1_000
    }

    public func text(title: String) -> String {
        let statuses = finalStatuses.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
        var lines = [
            "\(title)",
            "  keys \(keys), attempts \(attempts), lost \(losses), retries \(retries), replays \(replays), transport errors \(transportErrors)",
            "  final statuses: \(statuses.isEmpty ? "none" : statuses); unanswered \(unanswered); mismatched answers \(mismatches)",
            "  throughput \(format(throughput)) keys/s over \(format(seconds)) s",
            "  latency ms: p50 \(format(percentileMs(50))) p90 \(format(percentileMs(90))) p99 \(format(percentileMs(99))) p99.9 \(format(percentileMs(99.9)))",
        ]
        if let executions = upstreamExecutions, let duplicates, let missing {
            lines.append("  upstream executions \(executions) for \(keys) keys: duplicates \(duplicates), missing \(missing)")
        }
        lines.append("  verdict: \(passed ? "PASS" : "FAIL")")
        return lines.joined(separator: "\n")
    }

    public func json() -> String {
        let statuses = finalStatuses.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
        var fields = [
            "\"keys\":\(keys)", "\"attempts\":\(attempts)", "\"lost\":\(losses)", "\"retries\":\(retries)",
            "\"replays\":\(replays)", "\"transport_errors\":\(transportErrors)", "\"final_statuses\":{\(statuses)}",
            "\"unanswered\":\(unanswered)", "\"mismatches\":\(mismatches)", "\"seconds\":\(format(seconds))",
            "\"throughput\":\(format(throughput))",
            "\"latency_ms\":{\"p50\":\(format(percentileMs(50))),\"p90\":\(format(percentileMs(90))),\"p99\":\(format(percentileMs(99))),\"p99_9\":\(format(percentileMs(99.9)))}",
        ]
        if let executions = upstreamExecutions, let duplicates, let missing {
            fields += ["\"upstream_executions\":\(executions)", "\"duplicates\":\(duplicates)", "\"missing\":\(missing)"]
        }
        fields.append("\"passed\":\(passed)")
        return "{" + fields.joined(separator: ",") + "}"
    }

    private func format(_ value: Double) -> String {
        let scaled = (value * 100).rounded() / 100
        return String(scaled)
    }
}
