import Foundation

/// A deliberately small HTTP/1.1 client over a plain blocking socket, so that tests control
/// every byte: malformed requests, half-sent bodies, disconnects at a chosen moment.
public final class RawHTTPClient: @unchecked Sendable {
    public struct Response: Sendable, CustomStringConvertible {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        /// Status line and headers exactly as received.
        public var rawHead: String

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
        public func headers(_ name: String) -> [String] {
            headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1)
        }
        public var text: String { String(decoding: body, as: UTF8.self) }
        public var description: String { "\(status) \(text.prefix(300))" }
    }

    private let fd: Int32
    private var buffer: [UInt8] = []

    public init(port: Int, timeoutSeconds: Int = 10) throws {
        guard let fd = LoopbackSocket.connect(port: port) else {
            throw TestSupportError("cannot connect to 127.0.0.1:\(port)")
        }
        self.fd = fd
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestSupportError("send failed: errno \(errno)") }
            offset += n
        }
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Builds and sends one request with `Content-Length` (unless `headers` set framing).
    public func sendRequest(
        _ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = []
    ) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: test.local\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        let framed = headers.contains { ["content-length", "transfer-encoding"].contains($0.0.lowercased()) }
        if !framed && (!body.isEmpty || method == "POST" || method == "PUT" || method == "PATCH") {
            head += "Content-Length: \(body.count)\r\n"
        }
        head += "\r\n"
        try send(Array(head.utf8) + body)
    }

    public func request(
        _ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = []
    ) throws -> Response {
        try sendRequest(method, path, headers: headers, body: body)
        return try readResponse(method: method)
    }

    /// Reads one response; 1xx responses are skipped unless `interim` asks for them.
    public func readResponse(method: String = "GET", interim: Bool = false) throws -> Response {
        while true {
            let headEnd = try readUntil([13, 10, 13, 10])
            let rawHead = String(decoding: buffer[0..<headEnd], as: UTF8.self)
            buffer.removeFirst(headEnd + 4)
            var lines = rawHead.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst().split(separator: " ")
            guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw TestSupportError("bad status line: \(rawHead)") }
            let headers: [(String, String)] = lines.compactMap { line in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            if status < 200 {
                if interim { return Response(status: status, headers: headers, body: [], rawHead: rawHead) }
                continue
            }
            var response = Response(status: status, headers: headers, body: [], rawHead: rawHead)
            if method == "HEAD" || status == 204 || status == 304 { return response }
            if let length = response.header("content-length").flatMap(Int.init) {
                try fill(length)
                response.body = Array(buffer[0..<length])
                buffer.removeFirst(length)
            } else if response.header("transfer-encoding")?.lowercased() == "chunked" {
                response.body = try readChunked()
            } else {
                while try readMore() {}
                response.body = buffer
                buffer.removeAll()
            }
            return response
        }
    }

    /// True when the server closed the connection (reads EOF) within the timeout.
    public func isClosedByPeer() -> Bool {
        (try? readMore()) == false
    }

    public func closeNow() { shutdown(fd, Int32(SHUT_RDWR)) }

    private func readChunked() throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            let lineEnd = try readUntil([13, 10])
            let sizeText = String(decoding: buffer[0..<lineEnd], as: UTF8.self).split(separator: ";")[0]
            buffer.removeFirst(lineEnd + 2)
            guard let size = Int(sizeText, radix: 16) else { throw TestSupportError("bad chunk size \(sizeText)") }
            if size == 0 {
                _ = try readUntil([13, 10])  // no trailers expected
                buffer.removeFirst(2)
                return body
            }
            try fill(size + 2)
            body += buffer[0..<size]
            buffer.removeFirst(size + 2)
        }
    }

    private func readUntil(_ marker: [UInt8]) throws -> Int {
        while true {
            if buffer.count >= marker.count {
                for i in 0...(buffer.count - marker.count) where buffer[i] == marker[0] && Array(buffer[i..<i + marker.count]) == marker {
                    return i
                }
            }
            guard try readMore() else { throw TestSupportError("connection closed before the response was complete") }
        }
    }

    private func fill(_ count: Int) throws {
        while buffer.count < count {
            guard try readMore() else { throw TestSupportError("connection closed with \(buffer.count) of \(count) bytes") }
        }
    }

    /// Reads what is there; false on EOF.
    private func readMore() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n == 0 { return false }
        if n < 0 {
            if errno == ECONNRESET { return false }
            throw TestSupportError("read failed or timed out: errno \(errno)")
        }
        buffer += chunk[0..<n]
        return true
    }
}

/// Repeats `attempt` while `again` holds for its result, at most `times` tries, `pause` apart:
/// a client retrying as docs/behaviour.md tells clients to.
public func retrying<T>(
    times: Int, pause: Duration = .milliseconds(100), while again: (T) throws -> Bool, _ attempt: () async throws -> T
) async throws -> T {
    var result = try await attempt()
    var tries = 1
    while tries < times, try again(result) {
        try await Task.sleep(for: pause)
        result = try await attempt()
        tries += 1
    }
    return result
}
