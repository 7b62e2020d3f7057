import Foundation
import NIOConcurrencyHelpers
import TestSupport
import Testing

/// docs/behaviour.md, "Connection limits": the release binary under a slowloris flood, run by
/// `prlimit` with the descriptor limits a service manager may leave it.
@Suite(.serialized) struct ConnectionFloodTests {
    static let floodSize = 1_500
    static let normalRequests = 50

    /// This test process opens the flood: its own soft limit goes up to its hard one.
    static func raiseOwnDescriptorLimit() throws {
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        guard limit.rlim_cur >= rlim_t(floodSize + 500) else {
            throw TestSupportError("the test process may hold only \(limit.rlim_cur) descriptors")
        }
    }

    /// Connections that each send half a request head and then nothing (slowloris), `count`
    /// of them, which sit; after `renew()`, renewed as an attacker would: a new one replaces the
    /// oldest (which the proxy has most likely shed) every few milliseconds until `stop`. The
    /// connects past the proxy's backlog wait in the kernel, so they run off the caller.
    final class Flood: @unchecked Sendable {
        private let lock = NSLock()
        private var sockets: [Int32] = []
        private var stopped = false
        private var renewing = false
        private var total = 0

        func renew() { lock.withLock { renewing = true } }

        init(port: Int, count: Int) {
            Thread.detachNewThread {
                while !self.lock.withLock({ self.stopped }) {
                    if self.lock.withLock({ self.total >= count && !self.renewing }) {
                        usleep(10_000)
                        continue
                    }
                    guard let fd = LoopbackSocket.connect(port: port) else { continue }
                    _ = "POST /charges HTTP/1.1\r\nHost: flood\r\nIdempotency-Key: fl".withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                    let oldest = self.lock.withLock { () -> Int32? in
                        guard !self.stopped else { return fd }
                        self.sockets.append(fd)
                        self.total += 1
                        return self.sockets.count > count ? self.sockets.removeFirst() : nil
                    }
                    if let oldest {
                        close(oldest)
                        usleep(2_000)
                    }
                }
            }
        }

        /// Connections opened so far, replaced ones included.
        var opened: Int { lock.withLock { total } }

        func stop() {
            let all = lock.withLock { () -> [Int32] in
                stopped = true
                defer { sockets.removeAll() }
                return sockets
            }
            for fd in all { close(fd) }
        }
    }

    /// User and system CPU ticks of `pid` so far.
    static func cpuTicks(_ pid: pid_t) throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        guard let close = stat.lastIndex(of: ")") else { throw TestSupportError("unreadable /proc/\(pid)/stat") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // state is field 3; utime and stime are 14 and 15.
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else {
            throw TestSupportError("unreadable /proc/\(pid)/stat: \(stat)")
        }
        return user + system
    }

    /// `normalRequests` protected POSTs at once, each with a fresh key: how many got 201, and
    /// how long the last took.
    static func normalClients(port: Int, tag: String) async throws -> (answered: Int, seconds: Double) {
        try await blocking {
            let start = Date()
            let answered = NIOLockedValueBox(0)
            // Each on a thread of its own, so that all 50 wait in the backlog at once.
            let done = DispatchGroup()
            for i in 0..<normalRequests {
                done.enter()
                Thread.detachNewThread {
                    let client = try? RawHTTPClient(port: port, timeoutSeconds: 20)
                    let response = try? client?.request("POST", "/charges", headers: [("Idempotency-Key", "\(tag)-\(i)")], body: Array("x".utf8))
                    if response?.status == 201 { answered.withLockedValue { $0 += 1 } }
                    done.leave()
                }
            }
            done.wait()
            return (answered.withLockedValue { $0 }, Date().timeIntervalSince(start))
        }
    }

    /// "out of descriptors": a `max_connections` above what the limit allows, so descriptors
    /// run out while accepting (EMFILE), which must pause accepting, not spin, and shed as the
    /// cap does.
    @Test(arguments: [("raisable", "1024:20000", "auto"), ("hard", "1024:1024", "auto"), ("out of descriptors", "1024:1024", "5000")])
    func aSlowlorisFloodNeitherSpinsTheProxyNorKeepsNormalClientsOut(name: String, limits: String, maxConnections: String) async throws {
        try Self.raiseOwnDescriptorLimit()
        try await withDemoUpstream { upstream in
            let port = try FreePort.next()
            let child = try ChildProcess("/usr/bin/prlimit", [
                "--nofile=\(limits)", "--", ExecutableTests.binary,
                "--set", "listen=127.0.0.1:\(port)", "--set", "upstream=http://127.0.0.1:\(upstream.port)",
                "--set", "redis_url=\(SharedRedis.url)", "--set", "admin_listen=off",
                "--set", "key_prefix=test:\(UUID().uuidString.prefix(8)):", "--set", "max_connections=\(maxConnections)",
            ])
            defer {
                child.signal(SIGKILL)
                _ = child.wait()
            }
            try FreePort.waitUntilListening(port: port)
            let flood = Flood(port: port, count: Self.floodSize)
            defer { flood.stop() }
            try await eventually("the flood connecting", within: 30, pause: .milliseconds(100)) { flood.opened >= Self.floodSize }
            try await Task.sleep(for: .seconds(1))

            let before = try Self.cpuTicks(child.pid)
            try await Task.sleep(for: .seconds(3))
            let cpu = Double(try Self.cpuTicks(child.pid) - before) / Double(sysconf(Int32(_SC_CLK_TCK))) / 3
            flood.renew()
            let during = try await Self.normalClients(port: port, tag: "during")
            flood.stop()
            let after = try await Self.normalClients(port: port, tag: "after")
            print("slowloris flood (\(name)), limits \(limits), max_connections \(maxConnections), \(flood.opened) slow connections opened: proxy CPU \(Int(cpu * 100)) % of a core while it sat; \(during.answered) of 50 answered during it in \(during.seconds) s, \(after.answered) of 50 after it in \(after.seconds) s; stderr: \(child.stderr.split(separator: "\n").filter { $0.contains("max_connections") || $0.contains("descriptor") }.prefix(3))")
            #expect(cpu < 0.15, "the proxy spun at \(cpu) of a core")
            #expect(during.answered == Self.normalRequests && during.seconds < 10, "during the flood")
            #expect(after.answered == Self.normalRequests && after.seconds < 10, "after the flood")
        }
    }
}
