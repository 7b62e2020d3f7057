import Foundation

/// An upstream that answers each request with bytes the test chose (a close-delimited body,
/// a broken status line, framing that lies), so the proxy's response parser meets them over a
/// real socket. It reads each request's head and its `Content-Length` body (chunked bodies
/// are read to their last chunk) and records them as received.
public final class ScriptedUpstream: @unchecked Sendable {
    public struct Answer: Sendable {
        public var bytes: [UInt8]
        /// Close the connection after writing (a close-delimited body needs it).
        public var close: Bool

        public init(_ text: String, close: Bool = false) {
            self.bytes = Array(text.utf8)
            self.close = close
        }
    }

    public let port: Int
    private let listener: Int32
    private let respond: @Sendable (String) -> Answer
    private let lock = NSLock()
    private var received: [String] = []
    private var accepted = 0
    private var sockets: [Int32] = []

    /// `respond` gets each request as received (head and body) and returns the answer.
    public init(respond: @escaping @Sendable (String) -> Answer) throws {
        self.respond = respond
        let (listener, port) = try LoopbackSocket.bound()
        self.listener = listener
        self.port = port
        guard listen(listener, 16) == 0 else { throw TestSupportError("scripted upstream cannot listen") }
        Thread.detachNewThread { self.acceptLoop() }
    }

    /// Requests received so far, in order.
    public var requests: [String] { lock.withLock { received } }
    /// Connections accepted so far.
    public var connections: Int { lock.withLock { accepted } }

    public func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        lock.withLock { for s in sockets { shutdown(s, Int32(SHUT_RDWR)) } }
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            lock.withLock {
                accepted += 1
                sockets.append(fd)
            }
            Thread.detachNewThread { self.serve(fd) }
        }
    }

    private func serve(_ fd: Int32) {
        var buffer: [UInt8] = []
        defer {
            // Forgotten before it is closed: `stop` must never shut down a recycled descriptor
            // that another test now owns.
            lock.withLock { sockets.removeAll { $0 == fd } }
            close(fd)
        }
        while let request = readRequest(fd, &buffer) {
            lock.withLock { received.append(request) }
            let answer = respond(request)
            var offset = 0
            while offset < answer.bytes.count {
                let n = answer.bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                offset += n
            }
            if answer.close { return }
        }
    }

    private func readRequest(_ fd: Int32, _ buffer: inout [UInt8]) -> String? {
        guard let headEnd = readUntil(fd, &buffer, [13, 10, 13, 10], from: 0) else { return nil }
        let head = String(decoding: buffer[..<(headEnd + 4)], as: UTF8.self)
        var end = headEnd + 4
        let lower = head.lowercased()
        if let range = lower.range(of: "\r\ncontent-length: "),
            let length = Int(lower[range.upperBound...].prefix { $0.isNumber })
        {
            while buffer.count < end + length { guard readMore(fd, &buffer) else { return nil } }
            end += length
        } else if lower.contains("\r\ntransfer-encoding: chunked") {
            guard let last = readUntil(fd, &buffer, Array("0\r\n\r\n".utf8), from: end) else { return nil }
            end = last + 5
        }
        let request = String(decoding: buffer[..<end], as: UTF8.self)
        buffer.removeFirst(end)
        return request
    }

    private func readUntil(_ fd: Int32, _ buffer: inout [UInt8], _ marker: [UInt8], from start: Int) -> Int? {
        while true {
            if buffer.count >= start + marker.count {
                for i in start...(buffer.count - marker.count) where buffer[i..<(i + marker.count)].elementsEqual(marker) {
                    return i
                }
            }
            guard readMore(fd, &buffer) else { return nil }
        }
    }

    private func readMore(_ fd: Int32, _ buffer: inout [UInt8]) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return false }
        buffer += chunk[0..<n]
        return true
    }
}
