import NIOCore
import TestSupport
import Testing

@testable import RedisClient

/// Against real `redis-server` processes: the shared one from `scripts/test`, and private ones
/// for tests that restart, pause or reconfigure their server.
@Suite struct RedisConnectionTests {
    private func uniqueKey(_ name: String = #function) -> RedisArgument {
        .string("test:redisclient:\(name):\(UInt64.random(in: 0...UInt64.max))")
    }

    @Test func tenThousandPipelinedCommandsKeepTheirOrder() async throws {
        let client = try await TestRedisClient(port: SharedRedis.port)
        defer { Task { await client.close() } }
        let key = uniqueKey()
        let commands: [[RedisArgument]] = (0..<10_000).map { _ in ["INCR", key] }
        let replies = try await client.pipeline(commands)
        #expect(replies.count == 10_000)
        for (index, reply) in replies.enumerated() {
            guard case .success(.integer(let n)) = reply, n == index + 1 else {
                Issue.record("reply \(index) was \(reply)")
                return
            }
        }
        _ = try await client.send(["DEL", key])
    }

    @Test func binaryValuesRoundTrip() async throws {
        let client = try await TestRedisClient(port: SharedRedis.port)
        defer { Task { await client.close() } }
        let key = uniqueKey()
        let value: [UInt8] = [0, 13, 10, 36, 13, 10, 255, 0] + Array("tail\r\n".utf8)
        #expect(try await client.send(["SET", key, .bytes(value), "PX", "10000"]) == .status("OK"))
        #expect(try await client.send(["GET", key]).bytes == value)
        #expect(try await client.send(["GET", uniqueKey("missing")]) == .null)
        _ = try await client.send(["DEL", key])
    }

    @Test func serverErrorsAreRepliesNotFailures() async throws {
        let client = try await TestRedisClient(port: SharedRedis.port)
        defer { Task { await client.close() } }
        guard case .error(let message) = try await client.send(["NOSUCHCOMMAND"]) else {
            Issue.record("expected an error reply")
            return
        }
        #expect(message.hasPrefix("ERR"))
        #expect(try await client.send(["PING"]) == .status("PONG"))
    }

    @Test func evalshaSurvivesScriptFlush() async throws {
        let server = try RedisServerProcess()
        let client = try await TestRedisClient(port: server.port)
        defer { Task { await client.close() } }
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        #expect(try await client.run(script, keys: ["n"], arguments: ["2"]) == .integer(2))
        #expect(try await client.send(["SCRIPT", "FLUSH"]) == .status("OK"))
        #expect(try await client.run(script, keys: ["n"], arguments: ["3"]) == .integer(5))
        // EVAL cached it again, so EVALSHA alone works now.
        #expect(try await client.send(["EVALSHA", .string(script.sha1), "1", "n", "1"]) == .integer(6))
    }

    @Test func authenticatesWithAnACLUserAndSelectsTheDatabase() async throws {
        let server = try RedisServerProcess(arguments: ["--requirepass", "adminpw"])
        let admin = try await TestRedisClient(
            RedisConfiguration(address: .tcp(host: "127.0.0.1", port: server.port), password: "adminpw"))
        defer { Task { await admin.close() } }
        #expect(try await admin.send(["ACL", "SETUSER", "app", "on", ">apppw", "~*", "+@all"]) == .status("OK"))
        #expect(try await admin.send(["SELECT", "3"]) == .status("OK"))
        #expect(try await admin.send(["SET", "where", "db3"]) == .status("OK"))

        let app = try await TestRedisClient(
            RedisConfiguration(address: .tcp(host: "127.0.0.1", port: server.port), username: "app", password: "apppw", database: 3))
        defer { Task { await app.close() } }
        #expect(try await app.send(["GET", "where"]).string == "db3")
        #expect(try await app.send(["ACL", "WHOAMI"]).string == "app")
    }

    @Test func wrongPasswordIsAClearError() async throws {
        let server = try RedisServerProcess(arguments: ["--requirepass", "right"])
        let client = try await TestRedisClient(
            RedisConfiguration(address: .tcp(host: "127.0.0.1", port: server.port), password: "wrong"))
        defer { Task { await client.close() } }
        await #expect {
            try await client.send(["PING"])
        } throws: { error in
            "\(error)".contains("AUTH failed") && "\(error)".contains("WRONGPASS")
        }
    }

    @Test func connectsOverAUnixSocket() async throws {
        let server = try RedisServerProcess(unixSocket: true)
        let client = try await TestRedisClient(RedisConfiguration(address: .unix(path: server.unixSocket!), database: 1))
        defer { Task { await client.close() } }
        #expect(try await client.send(["SET", "u", "1"]) == .status("OK"))
        #expect(try await client.send(["CLIENT", "INFO"]).string?.contains("db=1") == true)
    }

    @Test func pausedServerTimesOutWithinTheCommandTimeout() async throws {
        let server = try RedisServerProcess()
        let client = try await TestRedisClient(port: server.port, timeout: .milliseconds(300))
        defer { Task { await client.close() } }
        #expect(try await client.send(["PING"]) == .status("PONG"))
        server.pause()
        defer { server.resume() }
        // It fails with .timeout rather than hanging on the paused server. The time is the
        // connection loop's: the test's own task may resume much later on a busy machine.
        let (result, took) = try await client.timedSend(["PING"])
        #expect(result == .failure(.timeout))
        #expect(took < .seconds(3), "took \(took)")
        server.resume()
        _ = try await client.waitUntilReady()
        #expect(try await client.send(["PING"]) == .status("PONG"))
    }

    @Test func restartedServerFailsInFlightCommandsThenRecovers() async throws {
        let server = try RedisServerProcess()
        let client = try await TestRedisClient(port: server.port)
        defer { Task { await client.close() } }
        #expect(try await client.send(["PING"]) == .status("PONG"))

        // A command in flight when the server dies fails cleanly, never hangs.
        let blocked = Task { try await client.send(["BLPOP", "never", "5"]) }
        try await Task.sleep(for: .milliseconds(100))
        server.stop()
        await #expect(throws: RedisError.self) { try await blocked.value }
        // While the server is down commands fail fast: the reconnect they bring forward is refused.
        await #expect(throws: RedisError.self) { try await client.send(["PING"]) }

        try server.start()
        let took = try await client.waitUntilReady()
        #expect(took < .seconds(5))
        #expect(try await client.send(["SET", "back", "1"]) == .status("OK"))
    }
}
