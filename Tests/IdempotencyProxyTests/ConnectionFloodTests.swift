import Foundation
import NIOConcurrencyHelpers
import TestSupport
import Testing

/// docs/behaviour.md, "Connection limits": the release binary under a slowloris flood, run by
/// `prlimit` with the descriptor limits a service manager may leave it.
@Suite(.serialized) struct ConnectionFloodTests {
    static let floodSize = 1_500
    static let normalRequests = 50

    /// Connections that each send half a request head and then nothing (slowloris), from a
    /// process of their own: this one must not hold 1,500 descriptors (Foundation's `Process`
    /// crashed starting a server for another test while a flood held them here). `count` are
    /// opened and sit for `sit` seconds; then, as an attacker would, a new one replaces the
    /// oldest (which the proxy has most likely shed) every 2 ms until the process is killed.
    static let floodScript = """
        import resource, socket, sys, time
        port, count, sit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        def slow():
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(b"POST /charges HTTP/1.1\\r\\nHost: flood\\r\\nIdempotency-Key: fl")
            return s
        held = [slow() for _ in range(count)]
        print("sitting", flush=True)
        time.sleep(sit)
        while True:
            held.append(slow())
            held.pop(0).close()
            time.sleep(0.002)
        """

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
            do {
                try FreePort.waitUntilListening(port: port)
            } catch {
                throw TestSupportError("the proxy did not start: \(error); its output: \(child.stderr.suffix(2_000))")
            }
            // It sits through a second of settling and the 3 s of measuring, then renews.
            let flood = try ChildProcess("/usr/bin/python3", ["-c", Self.floodScript, "\(port)", "\(Self.floodSize)", "4.5"])
            defer {
                flood.signal(SIGKILL)
                _ = flood.wait()
            }
            try await eventually("the flood connecting", within: 60, pause: .milliseconds(100)) { flood.stdout.contains("sitting") }
            try await Task.sleep(for: .seconds(1))

            let before = try Self.cpuTicks(child.pid)
            try await Task.sleep(for: .seconds(3))
            let cpu = Double(try Self.cpuTicks(child.pid) - before) / Double(sysconf(Int32(_SC_CLK_TCK))) / 3
            try await Task.sleep(for: .milliseconds(700))
            let during = try await Self.normalClients(port: port, tag: "during")
            flood.signal(SIGKILL)
            _ = flood.wait()
            let after = try await Self.normalClients(port: port, tag: "after")
            print("slowloris flood (\(name)), limits \(limits), max_connections \(maxConnections), \(Self.floodSize) slow connections sitting, then renewed: proxy CPU \(Int(cpu * 100)) % of a core while it sat; \(during.answered) of 50 answered during it in \(during.seconds) s, \(after.answered) of 50 after it in \(after.seconds) s; stderr: \(child.stderr.split(separator: "\n").filter { $0.contains("max_connections") || $0.contains("descriptor") }.prefix(3))")
            // A proxy that spins holds a core (about 1.0). One that waits read 0 to 4 % of a core
            // here, and 18 % once while the rest of the suite ran beside it.
            #expect(cpu < 0.5, "the proxy spun at \(cpu) of a core")
            #expect(during.answered == Self.normalRequests && during.seconds < 10, "during the flood")
            #expect(after.answered == Self.normalRequests && after.seconds < 10, "after the flood")
        }
    }
}
