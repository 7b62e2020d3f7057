import NIOCore
import NIOEmbedded
import Testing

@testable import RedisClient

/// `RedisChannelHandler` on an `EmbeddedChannel`: replies matched to commands in order, however
/// they are split, and a reply that does not come in time failing the whole connection.
@Suite struct RedisChannelHandlerTests {
    final class Replies {
        var results: [Result<RedisReply, RedisError>] = []
        func record(_ result: Result<RedisReply, RedisError>) { results.append(result) }
    }

    static func connected() throws -> (EmbeddedChannel, RedisChannelHandler) {
        let handler = RedisChannelHandler(timeout: .milliseconds(500))
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return (channel, handler)
    }

    @Test func repliesAreMatchedToCommandsInOrderAcrossSplitReads() throws {
        let (channel, handler) = try Self.connected()
        let replies = Replies()
        for _ in 0..<3 { handler.send(ByteBuffer(string: "*1\r\n$4\r\nPING\r\n"), completion: replies.record) }
        // Written at once, flushed once per loop pass.
        (channel.eventLoop as! EmbeddedEventLoop).run()
        var written = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written += String(buffer: buffer) }
        #expect(written == String(repeating: "*1\r\n$4\r\nPING\r\n", count: 3))
        for piece in ["+PO", "NG\r\n:4", "2\r\n$2\r\nok", "\r\n"] { try channel.writeInbound(ByteBuffer(string: piece)) }
        #expect(replies.results.count == 3)
        #expect(try replies.results[0].get() == .status("PONG"))
        #expect(try replies.results[1].get() == .integer(42))
        guard case .bulk(let bulk) = try replies.results[2].get() else { Issue.record("not a bulk reply"); return }
        #expect(String(buffer: bulk) == "ok")
    }

    @Test func aLateReplyFailsEveryCommandInFlightAndClosesTheChannel() throws {
        let (channel, handler) = try Self.connected()
        let loop = channel.eventLoop as! EmbeddedEventLoop
        let replies = Replies()
        handler.send(ByteBuffer(string: "*1\r\n$4\r\nPING\r\n"), completion: replies.record)
        loop.advanceTime(by: .milliseconds(200))
        handler.send(ByteBuffer(string: "*1\r\n$4\r\nPING\r\n"), completion: replies.record)
        loop.advanceTime(by: .milliseconds(301))
        #expect(replies.results.count == 2)
        #expect(replies.results.allSatisfy { $0 == .failure(.timeout) })
        #expect(!channel.isActive)
        // Later commands fail at once with the same error.
        handler.send(ByteBuffer(string: "*1\r\n$4\r\nPING\r\n"), completion: replies.record)
        #expect(replies.results.last == .failure(.timeout))
    }

    @Test func aReplyNoCommandWaitsForBreaksTheConnection() throws {
        let (channel, _) = try Self.connected()
        try? channel.writeInbound(ByteBuffer(string: "+SURPRISE\r\n"))
        #expect(!channel.isActive)
    }
}
