#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import IdempotencyCore
import NIOConcurrencyHelpers
import NIOPosix

/// Writes access log lines to standard error from a thread of its own, so that a slow reader of
/// standard error never blocks an event loop: a loop appends its line under a lock and goes on.
/// While standard error takes nothing, up to `limit` bytes wait; lines beyond are dropped and
/// counted in a line of their own once writing resumes.
final class AccessLogWriter: Sendable {
    private struct Pending {
        var bytes: [UInt8] = []
        var dropped = 0
        /// The thread is writing (and will look again before it stops).
        var writing = false
        /// The thread has been started (at the first line: a proxy that fails to start, or
        /// logs nothing, has none).
        var started = false
    }

    private static let limit = 4 << 20
    /// Writes of at most this many bytes, ending at a line's end, are not interleaved with
    /// other writers on a pipe (POSIX's PIPE_BUF).
    private static let atomicWrite = 4_096

    private let pending = NIOLockedValueBox(Pending())
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let descriptor: CInt

    init(descriptor: CInt = STDERR_FILENO) {
        self.descriptor = descriptor
    }

    func write(_ line: [UInt8]) {
        let wake = pending.withLockedValue { pending -> Bool in
            guard pending.bytes.count + line.count <= Self.limit else {
                pending.dropped += 1
                return false
            }
            pending.bytes += line
            guard !pending.writing else { return false }
            pending.writing = true
            if !pending.started {
                pending.started = true
                thread.start()
            }
            return true
        }
        if wake { thread.submit { _ in self.drain() } }
    }

    /// Writes what is pending, then stops (the lines already given are written first).
    func shutdown() {
        if pending.withLockedValue({ $0.started }) { try? thread.syncShutdownGracefully() }
        drain()
    }

    private func drain() {
        while true {
            let (bytes, dropped) = pending.withLockedValue { pending -> ([UInt8], Int) in
                let taken = (pending.bytes, pending.dropped)
                pending.bytes = []
                pending.dropped = 0
                if taken.0.isEmpty && taken.1 == 0 { pending.writing = false }
                return taken
            }
            if bytes.isEmpty && dropped == 0 { return }
            if dropped > 0 {
                var line = AccessLogLine()
                line.field("msg", "access log lines dropped: standard error took nothing while they came")
                line.field("dropped", dropped)
                writeAll(line.finish())
            }
            writeAll(bytes)
        }
    }

    /// Whole lines, in writes no larger than `atomicWrite` unless one line is larger.
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
                    if written < 0 {
                        if errno == EINTR { continue }
                        return  // standard error is gone: nothing else can be done with the lines
                    }
                    start += written
                }
            }
        }
    }
}

/// `write(2)` (the writer's own `write` hides its name).
private func writeBytes(_ descriptor: CInt, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}
