import NIOCore
import RedisClient
import Testing

@testable import RedisClient

/// What the Sentinels and a master say, read without a server.
@Suite struct SentinelRepliesTests {
    static func bulk(_ text: String) -> RedisReply { .bulk(ByteBuffer(string: text)) }

    @Test(arguments: [
        (RedisReply.array([bulk("10.0.0.5"), bulk("6380")]), ClusterNode(host: "10.0.0.5", port: 6380) as ClusterNode?),
        (.array([bulk("::1"), bulk("6379")]), ClusterNode(host: "::1", port: 6379)),
        (.null, nil),
    ])
    func theMastersAddressIsRead(reply: RedisReply, node: ClusterNode?) throws {
        #expect(try SentinelReplies.masterAddress(reply) == node)
    }

    @Test(arguments: [
        RedisReply.array([bulk("10.0.0.5")]), .array([bulk("h"), bulk("0")]), .array([bulk(""), bulk("6379")]),
        .array([bulk("h"), bulk("port")]), .integer(1), .error("ERR unknown command"),
    ])
    func anAddressThatIsNoneIsAnError(reply: RedisReply) {
        #expect(throws: RedisError.self) { try SentinelReplies.masterAddress(reply) }
    }

    @Test(arguments: [
        ("mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster", ClusterNode(host: "127.0.0.1", port: 6380) as ClusterNode?),
        ("other 127.0.0.1 6379 127.0.0.1 6380", "mymaster", nil),
        ("mymaster 127.0.0.1 6379 127.0.0.1", "mymaster", nil),
        ("mymaster a 1 b 70000", "mymaster", nil),
    ])
    func switchMasterNamesTheNewMasterOfOurName(payload: String, name: String, node: ClusterNode?) {
        #expect(SentinelReplies.switchedMaster(payload, name: name) == node)
    }

    @Test func roleTellsAMasterFromAReplica() {
        #expect(SentinelReplies.isMaster(.array([Self.bulk("master"), .integer(10), .array([])])))
        #expect(!SentinelReplies.isMaster(.array([Self.bulk("slave"), Self.bulk("127.0.0.1"), .integer(6379)])))
        #expect(!SentinelReplies.isMaster(.array([Self.bulk("sentinel"), .array([])])))
        #expect(!SentinelReplies.isMaster(.error("NOPERM")))
    }

    @Test(arguments: [
        ("READONLY You can't write against a read only replica.", true), ("MASTERDOWN Link with MASTER is down", true),
        ("NOSCRIPT No matching script", false), ("ERR wrong number of arguments", false),
    ])
    func readOnlyAndMasterDownSendTheClientBackToTheSentinels(message: String, notMaster: Bool) {
        #expect(SentinelReplies.saysNotMaster(message) == notMaster)
    }
}
