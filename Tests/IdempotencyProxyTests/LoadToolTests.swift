import LoadKit
import NIOPosix
import TestSupport
import Testing

/// The load tool end to end: duplicates happen without the proxy and never with it.
@Suite struct LoadToolTests {
    private func options(_ port: Int, stats: Int) -> LoadOptions {
        var o = LoadOptions(target: HTTPTarget(host: "127.0.0.1", port: port, path: "/charges"))
        o.requests = 300
        o.concurrency = 8
        o.loseRate = 0.3
        // A retry that meets its first attempt still in flight backs off and tries again: on a
        // busy machine that can take more than the default 10 retries.
        o.maxRetries = 30
        o.statsTarget = HTTPTarget(host: "127.0.0.1", port: stats, path: "/stats")
        return o
    }

    @Test func withoutTheProxyLostResponsesBecomeDuplicateCharges() async throws {
        try await withProxy { h in
            let report = try await LoadRunner(options: options(h.upstream.port, stats: h.upstream.port))
                .run(group: MultiThreadedEventLoopGroup.singleton)
            #expect((report.duplicates ?? 0) > 0)
            #expect(!report.passed)
        }
    }

    /// Every attempt fails mid-exchange (the upstream drops the connection unanswered): each
    /// counts, so the keys end after their retries instead of being retried forever.
    @Test(.timeLimit(.minutes(1))) func attemptsThatAlwaysFailEndAfterTheirRetries() async throws {
        try await withDemoUpstream { upstream in
            var o = LoadOptions(target: HTTPTarget(host: "127.0.0.1", port: upstream.port, path: "/drop"))
            o.requests = 3
            o.concurrency = 1
            o.maxRetries = 2
            let report = try await LoadRunner(options: o).run(group: MultiThreadedEventLoopGroup.singleton)
            #expect(report.unanswered == 3)
            #expect(!report.passed)
            #expect(upstream.executions("/drop") == 9, "3 keys × (1 + 2 retries)")
        }
    }

    /// A target that refuses every connection: each try waits as a retry would, instead of
    /// hammering it, and a cancelled run ends (a test past its time limit does not spin).
    @Test(.timeLimit(.minutes(1))) func aRefusingTargetIsTriedWithBackoffUntilTheRunIsCancelled() async throws {
        let port = try FreePort.next()
        var o = LoadOptions(target: HTTPTarget(host: "127.0.0.1", port: port, path: "/charges"))
        o.requests = 1
        o.concurrency = 1
        let run = Task { try await LoadRunner(options: o).run(group: MultiThreadedEventLoopGroup.singleton) }
        try await Task.sleep(for: .milliseconds(500))
        run.cancel()
        let report = try await run.value
        // A loaded machine may not have started the client yet: then there is nothing to count.
        #expect(report.unanswered == (report.transportErrors > 0 ? 1 : 0))
        // At least 5 ms between tries: at most about 100 in 500 ms (without a wait, thousands).
        #expect(report.transportErrors < 500, "\(report.transportErrors) refused tries")
    }

    @Test func throughTheProxyEveryKeyRunsExactlyOnce() async throws {
        try await withProxy { h in
            let report = try await LoadRunner(options: options(h.port, stats: h.upstream.port))
                .run(group: MultiThreadedEventLoopGroup.singleton)
            #expect(report.losses > 0)
            #expect(report.duplicates == 0)
            #expect(report.missing == 0)
            #expect(report.mismatches == 0)
            #expect(report.unanswered == 0)
            #expect(report.replays > 0)
            #expect(report.passed)
            #expect(h.upstream.snapshot().charges == 300)
        }
    }
}
