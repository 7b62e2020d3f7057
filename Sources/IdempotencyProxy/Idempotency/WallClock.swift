#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The host's wall clock, for the one thing that must be compared with a store's clock: a
/// claim's deadline (docs/behaviour.md, "Claims that land late"). Everything else measures
/// time on the event loop's monotonic clock.
enum WallClock {
    /// Milliseconds since the epoch.
    static func milliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000 + Int64(now.tv_nsec) / 1_000_000
    }
}
