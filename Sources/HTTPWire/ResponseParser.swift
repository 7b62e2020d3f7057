import NIOCore
import NIOHTTP1

/// Incremental HTTP/1.1 response parser (RFC 9112) for the proxy's own upstream connections.
/// The heads it hands on carry end-to-end headers only: hop-by-hop ones (and those
/// `Connection` names) are read for framing and dropped.
///
/// It replaces NIO's general decoder on the upstream side because it can hand body bytes on as
/// slices of what was read and needs no channel handler of its own: the per-request cost of a
/// proxy is mostly framing. It is strict where framing is at stake (status line, header syntax,
/// `Content-Length`, chunk sizes) and discards what a proxy must not forward (interim 1xx
/// responses, trailers). Any error means the connection cannot be trusted again.
public struct ResponseParser {
    public enum Part: Equatable {
        case head(ResponseHead)
        case body(ByteBuffer)
        /// `keepAlive`: the connection may carry another exchange.
        case end(keepAlive: Bool)
    }

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Larger heads are refused (NIO's decoder uses the same limit).
    public static let maxHeadBytes = 80 * 1024

    private enum State {
        /// No response is expected: any byte is out of step.
        case idle
        case head
        case fixed(remaining: Int)
        case chunked(ChunkedDecoder)
        case untilClose
    }

    private var state = State.idle
    private var headBytes: ByteBuffer?
    private var headRequest = false
    private var keepAlive = true

    public init() {}

    /// True between responses.
    public var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    /// A request went out: its response comes next. A response to HEAD has no body.
    public mutating func expectResponse(toHEAD: Bool) {
        state = .head
        headRequest = toHEAD
        headBytes = nil
    }

    /// Parses `buffer` into `parts`. Parts are collected rather than handed to a callback so
    /// that whoever receives them may start the next exchange on this parser.
    public mutating func feed(_ buffer: ByteBuffer, into parts: inout [Part]) throws(ParseError) {
        try feed(buffer) { parts.append($0) }
    }

    private mutating func feed(_ buffer: ByteBuffer, _ emit: (Part) -> Void) throws(ParseError) {
        var buffer = buffer
        while buffer.readableBytes > 0 {
            switch state {
            case .idle:
                throw ParseError("bytes arrived with no response expected")
            case .head:
                guard let (head, framing) = try takeHead(&buffer) else { return }
                try start(head, framing, leftover: buffer.readableBytes, emit)
            case .fixed(let remaining):
                let (piece, left) = buffer.readBodyPiece(remaining: remaining)
                emit(.body(piece))
                if left == 0 { finish(leftover: buffer.readableBytes, emit) } else { state = .fixed(remaining: left) }
            case .chunked(var decoder):
                let ended: Bool
                do { ended = try decoder.decode(&buffer) { emit(.body($0)) } } catch { throw ParseError(error.description) }
                state = .chunked(decoder)
                if ended { finish(leftover: buffer.readableBytes, emit) }
            case .untilClose:
                emit(.body(buffer))
                return
            }
            // Bytes after the response are ignored: `finish` marked the connection unusable.
            if isIdle { return }
        }
    }

    /// The upstream closed the connection. Returns normally if that ended a body delimited by
    /// the close (emitting `.end`) or came between responses; throws if a response was cut short.
    public mutating func connectionClosed(into parts: inout [Part]) throws(ParseError) {
        switch state {
        case .idle: return
        case .untilClose:
            keepAlive = false
            finish(leftover: 0) { parts.append($0) }
        default:
            throw ParseError("connection closed before the response was complete")
        }
    }

    // MARK: - head

    /// The complete head, or nil while more bytes are needed (they are kept).
    private mutating func takeHead(_ buffer: inout ByteBuffer) throws(ParseError) -> (ResponseHead, Framing)? {
        if var pending = headBytes {
            // A head split across reads: collect it, then parse it whole.
            headBytes = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        let end = buffer.withUnsafeReadableBytes { Self.headLength($0) }
        guard let end else {
            guard buffer.readableBytes <= Self.maxHeadBytes else { throw ParseError("response head over \(Self.maxHeadBytes) bytes") }
            headBytes = buffer
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return nil
        }
        guard end <= Self.maxHeadBytes else { throw ParseError("response head over \(Self.maxHeadBytes) bytes") }
        let result = buffer.withUnsafeReadableBytes { bytes in
            Result { () throws(ParseError) in try Self.parseHead(UnsafeRawBufferPointer(rebasing: bytes[..<end])) }
        }
        buffer.moveReaderIndex(forwardBy: end)
        return try result.get()
    }

    /// Length of the head including its empty last line, if all of it is here.
    static func headLength(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var index = 0
        while let lf = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) {
            let next = lf + 1
            if next < bytes.count, bytes[next] == UInt8(ascii: "\n") { return next + 1 }
            if next + 1 < bytes.count, bytes[next] == UInt8(ascii: "\r"), bytes[next + 1] == UInt8(ascii: "\n") {
                return next + 2
            }
            index = next
        }
        return nil
    }

    /// What the framing headers say, gathered while the head is parsed so that no header has
    /// to be looked up (and lower-cased) again.
    struct Framing: Equatable {
        var contentLength: Int?
        var transferEncoding = false
        /// The last transfer coding is `chunked`.
        var chunked = false
        var close = false
        var keepAlive = false
        /// Headers `Connection` names as hop-by-hop beyond its usual tokens (rare).
        var namedByConnection: [String] = []
    }

    static func parseHead(_ bytes: UnsafeRawBufferPointer) throws(ParseError) -> (ResponseHead, Framing) {
        var lines = HeadLines(bytes)
        guard let statusLine = lines.next() else { throw ParseError("empty response head") }
        let (version, status) = try parseStatusLine(statusLine)
        var kept = ByteBufferAllocator().buffer(capacity: bytes.count)
        var framing = Framing()
        while let line = lines.next(), !line.isEmpty {
            let name: HeadSyntax.Bytes, value: HeadSyntax.Bytes
            do { (name, value) = try HeadSyntax.field(line) } catch { throw ParseError(error.description) }
            try framing.note(name: name, value: value)
            // The head is handed on end to end: hop-by-hop headers stop here.
            if HopByHopHeaders.isListed(name) { continue }
            kept.writeHeaderLine(line)
        }
        var head = ResponseHead(
            version: version, status: HTTPResponseStatus(statusCode: status), headerLines: kept,
            contentLength: framing.contentLength)
        for name in framing.namedByConnection { head.remove(name: name) }
        return (head, framing)
    }

    /// `HTTP/1.x SP 3DIGIT [SP reason]`.
    private static func parseStatusLine(_ line: HeadSyntax.Bytes) throws(ParseError) -> (HTTPVersion, Int) {
        let start = line.startIndex
        guard line.count >= 12, line.starts(with: "HTTP/1.".utf8),
            line[start + 7] == UInt8(ascii: "0") || line[start + 7] == UInt8(ascii: "1"),
            line[start + 8] == UInt8(ascii: " "), line[(start + 9)..<(start + 12)].allSatisfy({ $0 >= 48 && $0 <= 57 }),
            line.count == 12 || line[start + 12] == UInt8(ascii: " ")
        else { throw ParseError("malformed status line") }
        guard HeadSyntax.isFieldValue(line) else {
            throw ParseError("control character in the status line")
        }
        let status = line[(start + 9)..<(start + 12)].reduce(0) { $0 * 10 + Int($1 - 48) }
        guard status >= 100 else { throw ParseError("status code below 100") }
        return (HTTPVersion(major: 1, minor: Int(line[start + 7] - 48)), status)
    }

    // MARK: - framing (RFC 9112 §6.3)

    private mutating func start(_ head: ResponseHead, _ framing: Framing, leftover: Int, _ emit: (Part) -> Void) throws(ParseError) {
        let status = Int(head.status.code)
        if status < 200 {
            // Interim responses are not the answer; we never ask for an upgrade.
            if status == 101 { throw ParseError("101 Switching Protocols without an upgrade request") }
            return
        }
        // HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only if told `keep-alive`.
        keepAlive = !framing.close && (head.version.minor >= 1 || framing.keepAlive)
        var head = head
        if framing.transferEncoding && framing.contentLength != nil {
            // Content-Length next to Transfer-Encoding is a smuggling pattern: the encoding
            // decides (RFC 9112 §6.3), the length must not travel on, and the connection is
            // never reused.
            head.remove(name: "content-length")
            keepAlive = false
        }
        emit(.head(head))
        if headRequest || status == 204 || status == 304 { return finish(leftover: leftover, emit) }
        if framing.transferEncoding {
            if framing.chunked {
                state = .chunked(ChunkedDecoder())
            } else {
                keepAlive = false
                state = .untilClose
            }
        } else if let length = framing.contentLength {
            if length == 0 { return finish(leftover: leftover, emit) }
            state = .fixed(remaining: length)
        } else {
            keepAlive = false
            state = .untilClose
        }
    }

    /// Ends the response. Bytes after it mean the upstream is out of step (or pipelining
    /// answers we never asked for): the connection must not carry another exchange, which is
    /// decided before `.end` lets the receiver hand it back.
    private mutating func finish(leftover: Int, _ emit: (Part) -> Void) {
        if leftover > 0 { keepAlive = false }
        state = .idle
        emit(.end(keepAlive: keepAlive))
    }
}

extension ResponseParser.Framing {
    fileprivate mutating func note(name: HeadSyntax.Bytes, value: HeadSyntax.Bytes) throws(ResponseParser.ParseError) {
        switch name.count {
        case 14 where HeadSyntax.equalsIgnoringCase(name, "content-length"):
            do { try HeadSyntax.noteContentLength(value, into: &contentLength) } catch {
                throw ResponseParser.ParseError(error == .invalid ? "invalid Content-Length" : "conflicting Content-Length values")
            }
        case 17 where HeadSyntax.equalsIgnoringCase(name, "transfer-encoding"):
            transferEncoding = true
            if let last = HeadSyntax.listElements(value).last { chunked = HeadSyntax.equalsIgnoringCase(last, "chunked") }
        case 10 where HeadSyntax.equalsIgnoringCase(name, "connection"):
            HeadSyntax.noteConnection(value, close: &close, keepAlive: &keepAlive, named: &namedByConnection)
        default:
            break
        }
    }
}
