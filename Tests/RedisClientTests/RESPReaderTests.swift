import NIOCore
import Testing

@testable import RedisClient

@Suite struct RESPReaderTests {
    static let cases: [(String, [UInt8], RedisReply)] = [
        ("status", Array("+OK\r\n".utf8), .status("OK")),
        ("error", Array("-ERR wrong\r\n".utf8), .error("ERR wrong")),
        ("integer", Array(":-42\r\n".utf8), .integer(-42)),
        ("bulk", Array("$5\r\nhello\r\n".utf8), .bulk(ByteBuffer(string: "hello"))),
        ("empty bulk", Array("$0\r\n\r\n".utf8), .bulk(ByteBuffer())),
        ("binary bulk", Array("$4\r\n".utf8) + [0, 13, 10, 255] + Array("\r\n".utf8), .bulk(ByteBuffer(bytes: [0, 13, 10, 255]))),
        ("nil bulk", Array("$-1\r\n".utf8), .null),
        ("nil array", Array("*-1\r\n".utf8), .null),
        ("empty array", Array("*0\r\n".utf8), .array([])),
        ("nested array", Array("*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+x\r\n".utf8),
         .array([.integer(1), .array([.bulk(ByteBuffer(string: "a")), .null]), .status("x")])),
    ]

    @Test(arguments: cases)
    func parsesWhole(name: String, bytes: [UInt8], expected: RedisReply) throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(bytes: bytes))
        #expect(try reader.next() == expected)
        #expect(try reader.next() == nil)
    }

    @Test(arguments: cases)
    func parsesOneByteAtATime(name: String, bytes: [UInt8], expected: RedisReply) throws {
        let reader = RESPReader()
        var replies: [RedisReply] = []
        for byte in bytes {
            try reader.feed(ByteBuffer(bytes: [byte]))
            while let reply = try reader.next() { replies.append(reply) }
        }
        #expect(replies == [expected])
    }

    @Test func parsesSeveralRepliesFromOneFeed() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "+A\r\n:2\r\n$1\r\nc\r\n"))
        #expect(try reader.next() == .status("A"))
        #expect(try reader.next() == .integer(2))
        #expect(try reader.next() == .bulk(ByteBuffer(string: "c")))
        #expect(try reader.next() == nil)
    }

    @Test func protocolErrorIsReported() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "?what\r\n"))
        #expect {
            try reader.next()
        } throws: { error in
            if case .protocolError = error as? RedisError { return true }
            return false
        }
    }

    /// hiredis 0.14 allocates an array's element table when its header arrives: a reply
    /// announcing 555,555,551 elements asked for 4.4 GB at once (found by the fuzzer). It is
    /// refused before any allocation; an array at the limit is still read.
    @Test(arguments: ["*555555551\r\n", "*\(RESPReader.maxArrayElements + 1)\r\n"])
    func refusesArraysTooLongToAllocate(header: String) throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: header))
        #expect {
            _ = try reader.next()
        } throws: { error in
            guard case .protocolError(let message) = error as? RedisError else { return false }
            return message.contains("over the limit of \(RESPReader.maxArrayElements)")
        }
    }

    @Test func readsAnArrayAtTheLimit() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "*\(RESPReader.maxArrayElements)\r\n"))
        #expect(try reader.next() == nil)
        try reader.feed(ByteBuffer(string: String(repeating: ":1\r\n", count: RESPReader.maxArrayElements)))
        guard case .array(let elements) = try reader.next() else { Issue.record("no array"); return }
        #expect(elements.count == RESPReader.maxArrayElements)
    }

    @Test func formatterIsBinarySafe() {
        var buffer = ByteBuffer()
        RESPFormatter.write(["SET", .bytes([0, 13, 10]), .string("")], into: &buffer)
        #expect(Array(buffer.readableBytesView) == Array("*3\r\n$3\r\nSET\r\n$3\r\n".utf8) + [0, 13, 10] + Array("\r\n$0\r\n\r\n".utf8))
    }

    @Test func scriptShaMatchesRedis() {
        // SHA-1 of "return 1", as SCRIPT LOAD reports it.
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}
