import Foundation
import IdempotencyCore
import RedisClient
import TestSupport
import Testing

/// The records API (docs/behaviour.md, "The records API") against a real Redis and PostgreSQL.
@Suite struct RecordsAPITests {
    static let token = "records-test-token"

    /// The id the proxy keeps a key's record under, for a client without `Authorization`.
    static func id(_ key: String) -> String {
        let scope = RequestDigest.scope(headerNames: ["Authorization"]) { _ in [] }
        return RequestDigest.recordKey(prefix: "", scope: scope, key: key)
    }

    static func settings(_ extra: [String: String] = [:]) -> [String: String] {
        ["admin_token": token].merging(extra) { $1 }
    }

    @Test func withoutATokenTheRecordsAreNotThere() async throws {
        try await withProxy { (h: ProxyHarness) async throws in
            _ = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(try await h.records("GET", Self.id("k"), token: Self.token).status == 404)
            #expect(try await h.records("DELETE", Self.id("k"), token: Self.token).status == 404)
        }
    }

    @Test func aMissingOrWrongTokenIs401AndABadIdIs400() async throws {
        try await withProxy(Self.settings()) { (h: ProxyHarness) async throws in
            for token in [nil, "wrong", Self.token + "x", String(Self.token.dropLast())] {
                let answer = try await h.records("GET", Self.id("k"), token: token)
                #expect(answer.status == 401 && answer.isProblem && answer.header("WWW-Authenticate") == "Bearer", "\(token ?? "none")")
                #expect(try await h.records("DELETE", Self.id("k"), token: token).status == 401)
            }
            for id in ["abc", String(repeating: "g", count: 64), Self.id("k") + "0"] {
                let answer = try await h.records("GET", id, token: Self.token)
                #expect(answer.status == 400 && answer.isProblem, "\(id)")
            }
            #expect(try await h.records("GET", Self.id("never-used"), token: Self.token).status == 404)
            #expect(try await h.records("DELETE", Self.id("never-used"), token: Self.token).status == 404)
        }
    }

    @Test func getShowsACompletedAndAnInFlightRecord() async throws {
        try await withProxy(Self.settings()) { h in
            let started = Date()
            let first = try await h.send("POST", "/charges", key: "done", body: "x")
            let answer = try await h.records("GET", Self.id("done"), token: Self.token)
            #expect(answer.status == 200 && answer.header("Content-Type") == "application/json")
            let record = try answer.json()
            #expect(record["id"] as? String == Self.id("done"))
            #expect(record["state"] as? String == "completed")
            #expect(record["stores"] as? [String] == ["redis"])
            #expect(record["status"] as? Int == 201)
            #expect(record["body_bytes"] as? Int == first.body.count)
            #expect((record["fingerprint"] as? String)?.count == 64)
            let completedAt = try #require(Self.date(record["completed_at"]))
            #expect(abs(completedAt.timeIntervalSince(started)) < 10)
            let expiresAt = try #require(Self.date(record["expires_at"]))
            #expect(abs(expiresAt.timeIntervalSince(completedAt) - 86_400) < 10, "response_ttl")

            let running = Task { try await h.send("POST", "/charges?delay=1500", key: "running", body: "x") }
            try await h.upstream.waitUntilExecuting("/charges", count: 2)
            let inFlight = try await h.records("GET", Self.id("running"), token: Self.token).json()
            #expect(inFlight["state"] as? String == "in_flight")
            #expect(inFlight["status"] == nil && inFlight["completed_at"] == nil)
            let lockEnds = try #require(Self.date(inFlight["expires_at"]))
            #expect(lockEnds.timeIntervalSinceNow > 5 && lockEnds.timeIntervalSinceNow <= 10, "lock_ttl 10s")
            #expect(try await running.value.status == 201)
        }
    }

    @Test func deleteLetsTheNextRequestRunAgainAndRefusesAnInFlightRecordUnlessForced() async throws {
        try await withProxy(Self.settings()) { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            #expect(try await h.records("DELETE", Self.id("k"), token: Self.token).status == 204)
            #expect(try await h.records("GET", Self.id("k"), token: Self.token).status == 404)
            let again = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(!again.replayed && again.status == 201 && again.body != first.body)
            #expect(h.upstream.executions("/charges") == 2)

            // In flight: 409 and nothing deleted, then forced.
            let running = Task { try await h.send("POST", "/charges?delay=1500", key: "slow", body: "x") }
            try await h.upstream.waitUntilExecuting("/charges", count: 3)
            let refused = try await h.records("DELETE", Self.id("slow"), token: Self.token)
            #expect(refused.status == 409 && refused.isProblem)
            #expect(try await h.records("GET", Self.id("slow"), token: Self.token).json()["state"] as? String == "in_flight")
            #expect(try await h.records("DELETE", Self.id("slow") + "?force=true", token: Self.token).status == 204)
            // The running request still answers its client, but stores nothing.
            #expect(try await running.value.status == 201)
            #expect(try await h.records("GET", Self.id("slow"), token: Self.token).status == 404)
            let rerun = try await h.send("POST", "/charges?delay=1500", key: "slow", body: "x")
            #expect(!rerun.replayed && rerun.status == 201)
            #expect(h.upstream.executions("/charges") == 4)
        }
    }

    /// A retry waiting for the request (`inflight_wait`) is woken by a forced delete and runs.
    @Test func aForcedDeleteWakesTheRetriesWaitingForTheRecord() async throws {
        try await withProxy(Self.settings(["inflight_wait": "8s"]), waitPollInterval: .seconds(60)) { h in
            let running = Task { try await h.send("POST", "/charges?delay=3000", key: "w", body: "x") }
            try await h.upstream.waitUntilExecuting("/charges")
            let waiting = Task { try await h.send("POST", "/charges?delay=3000", key: "w", body: "x") }
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await h.records("DELETE", Self.id("w") + "?force=true", token: Self.token).status == 204)
            try await h.upstream.waitUntilExecuting("/charges", count: 2)
            #expect(try await running.value.status == 201)
            let second = try await waiting.value
            #expect(second.status == 201 && !second.replayed)
        }
    }

    @Test(arguments: PostgresPath.allCases)
    func withPostgresBothStoresAreShownAndDeleted(path: PostgresPath) async throws {
        let redis = try RedisServerProcess()
        let table = TestTable(url: try path.url)
        try await withProxy(table.settings(Self.settings()), redisURL: redis.url) { h in
            _ = try await h.send("POST", "/charges", key: "k", body: "x")
            let record = try await h.records("GET", Self.id("k"), token: Self.token).json()
            #expect(record["stores"] as? [String] == ["redis", "postgres"])
            #expect(record["state"] as? String == "completed")
            let expiresAt = try #require(Self.date(record["expires_at"]))
            #expect(abs(expiresAt.timeIntervalSinceNow - 30 * 86_400) < 60, "retention, the later of the two")
            #expect(record["by_store"] == nil)

            #expect(try await h.records("DELETE", Self.id("k"), token: Self.token).status == 204)
            #expect(try await table.query("SELECT 1 FROM $TABLE WHERE record_key LIKE '%\(Self.id("k"))'").isEmpty)
            // Redis forgets everything: PostgreSQL no longer replays the key either.
            let client = try await TestRedisClient(port: redis.port)
            _ = try await client.send(["FLUSHALL"])
            await client.close()
            let again = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(!again.replayed && again.status == 201)
            #expect(h.upstream.executions("/charges") == 2)

            // Forced while in flight: the running request's completion stores nothing in either store.
            let running = Task { try await h.send("POST", "/charges?delay=1500", key: "slow", body: "x") }
            try await h.upstream.waitUntilExecuting("/charges", count: 3)
            #expect(try await h.records("DELETE", Self.id("slow"), token: Self.token).status == 409)
            #expect(try await h.records("DELETE", Self.id("slow") + "?force=true", token: Self.token).status == 204)
            #expect(try await running.value.status == 201)
            #expect(try await h.records("GET", Self.id("slow"), token: Self.token).status == 404)
            #expect(try await h.send("POST", "/charges", key: "slow", body: "x").replayed == false)
            #expect(h.upstream.executions("/charges") == 4)
        }
    }

    static func date(_ value: Any?) -> Date? {
        guard let text = value as? String else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }
}

extension ProxyHarness {
    /// A records API request on the admin listener.
    func records(_ method: String, _ idAndQuery: String, token: String?) async throws -> RawHTTPClient.Response {
        let headers = token.map { [("Authorization", "Bearer \($0)")] } ?? []
        return try await blocking { try RawHTTPClient(port: self.adminPort).request(method, "/records/\(idAndQuery)", headers: headers) }
    }
}

extension RawHTTPClient.Response {
    func json() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw TestSupportError("not a JSON object: \(text)")
        }
        return object
    }
}
