#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import IdempotencyCore
import NIOConcurrencyHelpers
import NIOPosix

/// Writes access log lines to standard error from a thread of its own, so that a slow reader of
/// standard error never blocks an event loop. A loop appends its line to a buffer under a lock
/// and goes on; it never wakes the thread for a line. The thread writes what has gathered every
/// 50 ms, or at once when 64 KiB have (a wake-up per line cost a futex call and a context
/// switch each: 11 µs a request at 45,000 requests/s). While standard error takes nothing, up to
/// 4 MiB of lines wait; lines beyond are dropped and counted in a line of their own.
final class AccessLogWriter: Sendable {
    private struct Pending {
        var bytes: [UInt8] = []
        var dropped = 0
        /// The thread has been started (at the first line: a proxy that fails to start, or
        /// logs nothing, has none).
        var started = false
        /// Shutting down: the thread writes what is left and stops.
        var stopping = false
    }

    private static let limit = 4 << 20
    private static let batch = 64 << 10
    private static let interval = 0.05
    /// Writes of at most this many bytes, ending at a line's end, are not interleaved with
    /// other writers on a pipe (POSIX's PIPE_BUF).
    private static let atomicWrite = 4_096

    private let pending = NIOLockedValueBox(Pending())
    /// 1: write now (a batch gathered, or shutting down).
    private let wake = WaitableFlag(value: 0)
    /// True once the thread has written its last lines.
    private let finished = WaitableFlag(value: false)
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let descriptor: CInt

    init(descriptor: CInt = STDERR_FILENO) {
        self.descriptor = descriptor
    }

    func write(_ line: [UInt8]) {
        let (start, batchGathered) = pending.withLockedValue { pending -> (Bool, Bool) in
            guard pending.bytes.count + line.count <= Self.limit else {
                pending.dropped += 1
                return (false, false)
            }
            let below = pending.bytes.count < Self.batch
            pending.bytes += line
            defer { pending.started = true }
            return (!pending.started, below && pending.bytes.count >= Self.batch)
        }
        if start {
            thread.start()
            thread.submit { _ in self.run() }
        }
        if batchGathered { wake.set(1) }
    }

    /// Writes what is pending, waiting at most `timeout` seconds for a stalled standard error
    /// (then the thread is left to the process's exit).
    func shutdown(timeout: Double = 2) {
        let started = pending.withLockedValue { pending -> Bool in
            pending.stopping = true
            return pending.started
        }
        guard started else { return }
        wake.set(1)
        if finished.wait(for: true, timeoutSeconds: timeout) { try? thread.syncShutdownGracefully() }
    }

    private func run() {
        while true {
            _ = wake.wait(for: 1, timeoutSeconds: Self.interval, then: 0)
            let (bytes, dropped, stopping) = pending.withLockedValue { pending in
                defer {
                    pending.bytes = []
                    pending.dropped = 0
                }
                return (pending.bytes, pending.dropped, pending.stopping)
            }
            if dropped > 0 {
                var line = AccessLogLine()
                line.field("msg", "access log lines dropped: standard error took nothing while they came")
                line.field("dropped", dropped)
                writeAll(line.finish())
            }
            writeAll(bytes)
            if stopping {
                finished.set(true)
                return
            }
        }
    }

    /// Whole lines, in writes of at most `atomicWrite` bytes (a longer line is cut).
    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { all in
            var start = 0
            while start < all.count {
                var end = min(all.count, start + Self.atomicWrite)
                if end < all.count, let lastNewline = all[start..<end].lastIndex(of: UInt8(ascii: "\n")) {
                    end = lastNewline + 1
                }
                while start < end {
                    let written = writeBytes(descriptor, all.baseAddress! + start, end - start)
                    if written >= 0 {
                        start += written
                    } else if errno == EAGAIN || errno == EWOULDBLOCK {
                        usleep(1_000)  // a non-blocking standard error that is full
                    } else if errno != EINTR {
                        return  // standard error is gone: nothing else can be done with the lines
                    }
                }
            }
        }
    }
}

/// A `ConditionLock` used as a flag one thread waits on.
private final class WaitableFlag<Value: Equatable>: @unchecked Sendable {
    private let lock: ConditionLock<Value>

    init(value: Value) { lock = ConditionLock(value: value) }

    func set(_ value: Value) {
        lock.lock()
        lock.unlock(withValue: value)
    }

    /// Waits until the value is `wanted` (true) or `timeoutSeconds` pass (false); `then`
    /// replaces the value it found.
    func wait(for wanted: Value, timeoutSeconds: Double, then next: Value? = nil) -> Bool {
        guard lock.lock(whenValue: wanted, timeoutSeconds: timeoutSeconds) else { return false }
        lock.unlock(withValue: next ?? wanted)
        return true
    }
}

/// `write(2)` (the writer's own `write` hides its name).
private func writeBytes(_ descriptor: CInt, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}
