import Foundation

/// A loopback TCP relay that can hold traffic back: bytes in both directions are delayed while
/// it is held and delivered, in order, on release. Used to make a proxy's Redis replies late.
public final class TCPRelay: @unchecked Sendable {
    public let port: Int
    private let targetPort: Int
    private let listener: Int32
    private let lock = NSCondition()
    private var held = false
    /// Only the target's replies are held: what the client sends still arrives and runs.
    private var holdingRepliesOnly = false
    private var refusing = false
    private var stopped = false
    private var sockets: [Int32] = []

    public init(targetPort: Int) throws {
        self.targetPort = targetPort
        let (listener, port) = try LoopbackSocket.bound()
        self.listener = listener
        self.port = port
        guard listen(listener, 16) == 0 else { throw TestSupportError("relay cannot listen") }
        Thread.detachNewThread { self.acceptLoop() }
    }

    public func hold() { lock.withLock { held = true } }

    /// Holds only the target's replies: commands reach the server and run, their answers are
    /// late (a slow network back, a reply lost to a timeout).
    public func holdReplies() {
        lock.withLock {
            held = true
            holdingRepliesOnly = true
        }
    }

    public func release() {
        lock.withLock {
            held = false
            holdingRepliesOnly = false
            lock.broadcast()
        }
    }

    /// An outage: cuts every connection and closes new ones at once, until `outage(false)`.
    public func outage(_ on: Bool) {
        lock.withLock {
            refusing = on
            if on {
                for s in sockets { shutdown(s, Int32(SHUT_RDWR)) }
                sockets.removeAll()
            }
        }
    }

    public func stop() {
        lock.withLock {
            stopped = true
            held = false
            lock.broadcast()
        }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        lock.withLock { for s in sockets { shutdown(s, Int32(SHUT_RDWR)) } }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            if lock.withLock({ refusing }) {
                close(client)
                continue
            }
            guard let upstream = LoopbackSocket.connect(port: targetPort) else {
                close(client)
                continue
            }
            lock.withLock { sockets += [client, upstream] }
            Thread.detachNewThread { self.pump(from: client, to: upstream, replies: false) }
            Thread.detachNewThread { self.pump(from: upstream, to: client, replies: true) }
        }
    }

    private func pump(from source: Int32, to destination: Int32, replies: Bool) {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            lock.withLock { while held && (replies || !holdingRepliesOnly) && !stopped { lock.wait() } }
            var offset = 0
            while offset < n {
                let w = chunk[offset..<n].withUnsafeBytes { send(destination, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if w <= 0 { break }
                offset += w
            }
        }
        shutdown(destination, Int32(SHUT_WR))
    }
}
