import NIOCore
import Testing

@testable import RedisClient

@Suite struct RedisPushTests {
    static func bulk(_ text: String) -> RedisReply { .bulk(ByteBuffer(string: text)) }

    @Test(arguments: [
        (RedisReply.array([bulk("message"), bulk("c"), bulk("done")]), RedisPush.message(channel: "c", payload: "done")),
        (.array([bulk("smessage"), bulk("idem:1"), bulk("released")]), .message(channel: "idem:1", payload: "released")),
        (.array([bulk("unsubscribe"), bulk("c"), .integer(0)]), .unsubscribed(channel: "c")),
        (.array([bulk("sunsubscribe"), bulk("idem:1"), .integer(2)]), .unsubscribed(channel: "idem:1")),
        (.array([bulk("subscribe"), bulk("c"), .integer(1)]), .other),
        (.array([bulk("ssubscribe"), bulk("c"), .integer(1)]), .other),
        (.error("MOVED 3999 127.0.0.1:7001"), .error("MOVED 3999 127.0.0.1:7001")),
        // Malformed or unexpected: nothing to act on.
        (.array([bulk("message"), bulk("c")]), .other),
        (.array([bulk("unsubscribe"), .null, .integer(0)]), .other),
        (.array([.integer(1), bulk("c"), bulk("x")]), .other),
        (.status("OK"), .other),
        (.array([]), .other),
    ])
    func readsWhatASubscribedConnectionReceives(reply: RedisReply, push: RedisPush) {
        #expect(RedisPush(reply) == push)
    }
}
