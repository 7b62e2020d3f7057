import NIOCore
import NIOHTTP1

/// Incremental HTTP/1.1 request parser (RFC 9112) for the proxy's client connections.
///
/// It replaces NIO's decoder on the client side because it keeps a head's header lines as the
/// bytes they came in (forwarding copies them; no strings, no `HTTPHeaders`) and hands body
/// bytes on as slices of what was read. A proxy forwards bodies, so where the framing is at
/// stake it is strict: a request another server could frame differently is refused rather than
/// guessed at (CRLF line ends only, no line folding, no whitespace before a header's colon, one
/// `Content-Length` value, `Transfer-Encoding` only as `chunked` and never next to a length or
/// in HTTP/1.0, one `Host`). Any error ends the connection: the next request cannot be found
/// reliably.
public struct RequestParser {
    public enum Part {
        case head(RequestHead)
        case body(ByteBuffer)
        case end
    }

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        /// What is wrong, for a problem `detail`.
        public let description: String
        /// The head is over `maxHeadBytes`: 431 rather than 400.
        public let headTooLarge: Bool

        init(_ description: String, headTooLarge: Bool = false) {
            self.description = description
            self.headTooLarge = headTooLarge
        }
    }

    /// Larger request heads (request line and headers) are refused (docs/behaviour.md §4: 64 KiB).
    public static let maxHeadBytes = 64 * 1024

    private enum State {
        case head
        case fixed(remaining: Int)
        case chunked(ChunkedDecoder)
        /// The last request ended the connection, or was refused: later bytes are not read.
        case closed
    }

    private var state = State.head
    /// A head split across reads, and how far its complete lines were already checked.
    private var pending: (bytes: ByteBuffer, checked: Int)?
    private var keepAlive = true

    public init() {}

    /// Parses `buffer`, handing each part to `emit` as soon as it is complete. After an error
    /// nothing more is read.
    public mutating func feed(_ buffer: ByteBuffer, _ emit: (Part) -> Void) throws(ParseError) {
        do {
            try parse(buffer, emit)
        } catch {
            state = .closed
            pending = nil
            throw error
        }
    }

    private mutating func parse(_ buffer: ByteBuffer, _ emit: (Part) -> Void) throws(ParseError) {
        var buffer = buffer
        while buffer.readableBytes > 0 {
            switch state {
            case .closed:
                return
            case .head:
                guard let head = try takeHead(&buffer) else { return }
                keepAlive = head.keepAlive
                emit(.head(head))
                switch head.framing {
                case .none, .length(0): end(emit)
                case .length(let length): state = .fixed(remaining: length)
                case .chunked: state = .chunked(ChunkedDecoder())
                }
            case .fixed(let remaining):
                let (piece, left) = buffer.readBodyPiece(remaining: remaining)
                emit(.body(piece))
                if left == 0 { end(emit) } else { state = .fixed(remaining: left) }
            case .chunked(var decoder):
                let ended: Bool
                do { ended = try decoder.decode(&buffer) { emit(.body($0)) } } catch { throw ParseError(error.description) }
                state = .chunked(decoder)
                if ended { end(emit) }
            }
        }
    }

    private mutating func end(_ emit: (Part) -> Void) {
        state = keepAlive ? .head : .closed
        emit(.end)
    }

    // MARK: - head

    /// The complete head, or nil while more bytes are needed (they are kept).
    private mutating func takeHead(_ buffer: inout ByteBuffer) throws(ParseError) -> RequestHead? {
        var checked = 0
        if let pending {
            self.pending = nil
            var bytes = pending.bytes
            bytes.writeBuffer(&buffer)
            buffer = bytes
            checked = pending.checked
        }
        if checked == 0 {
            // Empty lines before a request are ignored (RFC 9112 §2.2): some clients send a CRLF
            // after a body.
            while buffer.readableBytesView.starts(with: Self.crlf) { buffer.moveReaderIndex(forwardBy: 2) }
            if buffer.readableBytes == 0 { return nil }
        }
        // Only as far as a head may reach: what lies beyond cannot change the answer.
        let scan = buffer.withUnsafeReadableBytes { bytes in
            Result { () throws(ParseError) in
                try Self.scanHead(UnsafeRawBufferPointer(rebasing: bytes.prefix(Self.maxHeadBytes)), from: checked)
            }
        }
        switch try scan.get() {
        case .incomplete(let checkedUpTo):
            guard buffer.readableBytes < Self.maxHeadBytes else { throw Self.tooLarge }
            pending = (buffer, checkedUpTo)
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return nil
        case .complete(let length):
            let head = buffer.readSlice(length: length)!
            let parsed = head.withUnsafeReadableBytes { bytes in
                Result { () throws(ParseError) in try Self.parseHead(bytes, of: head) }
            }
            return try parsed.get()
        }
    }

    private static let crlf: [UInt8] = [13, 10]
    private static let tooLarge = ParseError("its head is over \(maxHeadBytes / 1024) KiB", headTooLarge: true)

    enum Scan: Equatable {
        /// The head's length including its empty last line.
        case complete(Int)
        /// Lines before this offset end in CRLF; the head goes on.
        case incomplete(Int)
    }

    /// Finds the end of the head, refusing a line that ends in a bare LF as soon as it is seen.
    static func scanHead(_ bytes: UnsafeRawBufferPointer, from start: Int) throws(ParseError) -> Scan {
        var lineStart = start
        while let lf = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) {
            guard lf > lineStart, bytes[lf - 1] == UInt8(ascii: "\r") else {
                throw ParseError("a line does not end with CRLF")
            }
            if lf - 1 == lineStart { return .complete(lf + 1) }
            lineStart = lf + 1
        }
        return .incomplete(lineStart)
    }

    /// Parses a complete head (`bytes`, the readable bytes of `head`: every line ending in CRLF,
    /// the last one empty). Its header lines stay a slice of `head`.
    static func parseHead(_ bytes: UnsafeRawBufferPointer, of head: ByteBuffer) throws(ParseError) -> RequestHead {
        var lines = HeadLines(bytes)
        let requestLine = lines.next()!
        let (method, target, version) = try parseRequestLine(requestLine)
        var expectsContinue = false
        var namedByConnection: [String] = []
        var contentLength: Int?
        var chunked = false
        var hasHost = false
        var close = false
        var keepAliveToken = false
        while let line = lines.next(), !line.isEmpty {
            let name: HeadSyntax.Bytes, value: HeadSyntax.Bytes
            do { (name, value) = try HeadSyntax.field(line) } catch { throw ParseError(error.description) }
            switch name.count {
            case 4 where HeadSyntax.equalsIgnoringCase(name, "host"):
                // Two would let the upstream and whatever routes by `Host` see different hosts.
                guard !hasHost else { throw ParseError("it has more than one Host header") }
                hasHost = true
            case 6 where HeadSyntax.equalsIgnoringCase(name, "expect"):
                expectsContinue = expectsContinue || HeadSyntax.equalsIgnoringCase(value, "100-continue")
            case 10 where HeadSyntax.equalsIgnoringCase(name, "connection"):
                HeadSyntax.noteConnection(value, close: &close, keepAlive: &keepAliveToken, named: &namedByConnection)
            case 14 where HeadSyntax.equalsIgnoringCase(name, "content-length"):
                do { try HeadSyntax.noteContentLength(value, into: &contentLength) } catch {
                    throw ParseError(
                        error == .invalid
                            ? "Content-Length is not a decimal number" : "Content-Length has conflicting values")
                }
            case 17 where HeadSyntax.equalsIgnoringCase(name, "transfer-encoding"):
                // `chunked` is the only coding the proxy can frame, and it may be applied once.
                guard !chunked, HeadSyntax.equalsIgnoringCase(value, "chunked") else {
                    throw ParseError("Transfer-Encoding is not just chunked, the only transfer coding accepted")
                }
                chunked = true
            default:
                break
            }
        }
        var framing = RequestHead.Framing.none
        if chunked {
            // Both would let another server find a different end of the body (RFC 9112 §6.1).
            guard contentLength == nil else { throw ParseError("it has both Content-Length and Transfer-Encoding") }
            guard version.minor == 1 else { throw ParseError("Transfer-Encoding is not allowed in HTTP/1.0") }
            framing = .chunked
        } else if let contentLength {
            framing = .length(contentLength)
        }
        let headersStart = requestLine.endIndex + 2
        return RequestHead(
            method: method, target: target, version: version,
            headerLines: head.getSlice(at: head.readerIndex + headersStart, length: bytes.count - 2 - headersStart)!,
            framing: framing,
            // HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only if told `keep-alive`.
            keepAlive: !close && (version.minor == 1 || keepAliveToken),
            expectsContinue: expectsContinue, namedByConnection: namedByConnection)
    }

    /// `method SP request-target SP HTTP-version` (RFC 9112 §3).
    private static func parseRequestLine(
        _ line: HeadSyntax.Bytes
    ) throws(ParseError) -> (method: HTTPMethod, target: String, version: HTTPVersion) {
        guard let methodEnd = line.firstIndex(of: UInt8(ascii: " ")), methodEnd > line.startIndex else {
            throw ParseError("the request line is not `method target version`")
        }
        let method = line[..<methodEnd]
        guard method.allSatisfy(HeadSyntax.isTokenByte) else { throw ParseError("the method is not a token") }
        let afterMethod = line[(methodEnd + 1)...]
        guard let targetEnd = afterMethod.firstIndex(of: UInt8(ascii: " ")), targetEnd > afterMethod.startIndex else {
            throw ParseError("the request line is not `method target version`")
        }
        let target = afterMethod[..<targetEnd]
        guard target.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw ParseError("the request target contains a space, a control character or a non-ASCII byte")
        }
        // RFC 9112 §3.2: origin-form (`/path`), absolute-form (`http://host/path`), or `*` for
        // OPTIONS. A reverse proxy opens no tunnels, so CONNECT's authority-form is not one.
        let isAsterisk = target.count == 1 && target.first == UInt8(ascii: "*")
        guard target.first == UInt8(ascii: "/") || isAsterisk && method.elementsEqual("OPTIONS".utf8)
            || HeadSyntax.equalsIgnoringCase(target.prefix(7), "http://".utf8)
            || HeadSyntax.equalsIgnoringCase(target.prefix(8), "https://".utf8)
        else {
            throw ParseError("the request target is not a path (`/…`), an http(s) URL, or `*` for OPTIONS")
        }
        let version = afterMethod[(targetEnd + 1)...]
        guard version.count == 8, version.starts(with: "HTTP/1.".utf8), let minor = version.last, minor == 48 || minor == 49
        else { throw ParseError("the protocol version is not HTTP/1.0 or HTTP/1.1") }
        return (
            HTTPMethod(rawValue: String(decoding: method, as: UTF8.self)), String(decoding: target, as: UTF8.self),
            HTTPVersion(major: 1, minor: Int(minor - 48))
        )
    }
}
