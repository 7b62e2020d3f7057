import Testing

@testable import LoadKit

@Suite struct BackoffTests {
    @Test(arguments: [
        (1, 0.0, 5.0), (1, 1.0, 10.0), (2, 0.0, 10.0), (2, 1.0, 20.0),
        (3, 0.5, 30.0), (7, 1.0, 500.0), (30, 0.0, 250.0),
    ])
    func equalJitterStaysWithinHalfToFullOfTheCappedExponential(retry: Int, unit: Double, expected: Double) {
        #expect(Backoff(baseMs: 10, capMs: 500).delayMs(retry: retry, unit: unit) == expected)
    }
}

@Suite struct KeyLedgerTests {
    typealias Answer = KeyLedger.Answer

    @Test func identicalFinalAnswersAreNoMismatch() {
        var ledger = KeyLedger()
        ledger.answered(Answer(status: 201, body: [1, 2], replayed: false))
        ledger.answered(Answer(status: 201, body: [1, 2], replayed: true))
        #expect(!ledger.hasMismatch)
        #expect(ledger.isDone)
    }

    @Test(arguments: [
        Answer(status: 201, body: [1, 3], replayed: true),
        Answer(status: 200, body: [1, 2], replayed: true),
    ])
    func anyDifferenceIsAMismatch(second: Answer) {
        var ledger = KeyLedger()
        ledger.answered(Answer(status: 201, body: [1, 2], replayed: false))
        ledger.answered(second)
        #expect(ledger.hasMismatch)
    }

    @Test(arguments: [409, 429, 502, 503, 504])
    func retryableAnswersDoNotEndTheKey(status: Int) {
        var ledger = KeyLedger()
        ledger.answered(Answer(status: status, body: [], replayed: false))
        #expect(!ledger.isDone)
        #expect(ledger.retryableAnswers == 1)
        ledger.answered(Answer(status: 201, body: [9], replayed: false))
        #expect(ledger.final?.status == 201)
        #expect(!ledger.hasMismatch)
    }
}

@Suite struct LoadReportTests {
    @Test func countsDuplicatesAndMissingFromUpstreamStats() {
        var report = LoadReport()
        var ledger = KeyLedger()
        ledger.attemptStarted()
        ledger.lost()
        ledger.attemptStarted()
        ledger.answered(.init(status: 201, body: [1], replayed: true))
        for _ in 0..<4 { report.add(ledger, finalLatencyMicros: 1_000) }
        report.upstreamExecutions = 6
        report.upstreamDistinctKeys = 3
        #expect(report.duplicates == 3)
        #expect(report.missing == 1)
        #expect(report.retries == 4)
        #expect(report.replays == 4)
        #expect(!report.passed)
        report.upstreamExecutions = 4
        report.upstreamDistinctKeys = 4
        #expect(report.passed)
    }

    @Test func unansweredKeysFailTheRun() {
        var report = LoadReport()
        var ledger = KeyLedger()
        ledger.attemptStarted()
        ledger.answered(.init(status: 409, body: [], replayed: false))
        report.add(ledger, finalLatencyMicros: nil)
        #expect(report.unanswered == 1)
        #expect(!report.passed)
    }

    @Test func percentilesComeFromTheRecordedLatencies() {
        var report = LoadReport()
        var ledger = KeyLedger()
        ledger.answered(.init(status: 201, body: [], replayed: false))
        for micros in 1...1_000 { report.add(ledger, finalLatencyMicros: UInt64(micros * 10)) }
        #expect(abs(report.percentileMs(50) - 5.0) < 0.05)
        #expect(abs(report.percentileMs(99) - 9.9) < 0.05)
        #expect(report.json().contains("\"passed\":true"))
    }

    @Test func readsStatsJSON() {
        #expect(LoadRunner.jsonInt("{\"charges\": 12, \"distinct_keys\": 7}", "charges") == 12)
        #expect(LoadRunner.jsonInt("{\"charges\": 12, \"distinct_keys\": 7}", "distinct_keys") == 7)
        #expect(LoadRunner.jsonInt("{}", "charges") == nil)
    }

    @Test func bodiesHaveTheRequestedSizeAndDifferPerKey() {
        #expect(LoadRunner.body(index: 1, size: 64).count == 64)
        #expect(LoadRunner.body(index: 1, size: 64) != LoadRunner.body(index: 2, size: 64))
        #expect(LoadRunner.body(index: 1, size: 3).count == 3)
    }

    @Test func parsesTargets() {
        #expect(HTTPTarget("http://127.0.0.1:8081/charges") == HTTPTarget(host: "127.0.0.1", port: 8081, path: "/charges"))
        #expect(HTTPTarget("http://h") == HTTPTarget(host: "h", port: 80, path: "/"))
        #expect(HTTPTarget("https://h") == HTTPTarget(host: "h", port: 443, path: "/", tls: true))
        #expect(HTTPTarget("https://10.0.0.1:8443/p") == HTTPTarget(host: "10.0.0.1", port: 8443, path: "/p", tls: true))
        #expect(HTTPTarget("ftp://h") == nil)
    }
}
