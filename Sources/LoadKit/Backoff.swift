/// How long a client waits before retrying an attempt.
public struct Backoff: Sendable, Equatable {
    public var baseMs: Double
    public var capMs: Double

    public init(baseMs: Double = 10, capMs: Double = 500) {
        self.baseMs = baseMs
        self.capMs = capMs
    }

    /// Delay before retry number `retry` (1 for the first retry) with "equal jitter":
    /// `d = min(cap, base · 2^(retry-1))`, then a uniform pick in `[d/2, d]`, so retries spread
    /// out instead of arriving in lockstep, yet never come sooner than half the backoff.
    /// `unit` is a random number in [0, 1].
    public func delayMs(retry: Int, unit: Double) -> Double {
        let exponential = baseMs * Double(1 << min(max(retry - 1, 0), 20))
        let ceiling = min(capMs, exponential)
        return ceiling / 2 + ceiling / 2 * min(max(unit, 0), 1)
    }
}
