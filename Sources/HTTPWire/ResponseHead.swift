import NIOCore
import NIOHTTP1

/// An upstream response head as the proxy hands it on: its end-to-end header lines stay the
/// bytes they were (hop-by-hop ones and those `Connection` names left out), so that a streamed
/// response is written on without taking its headers apart into strings and back.
public struct ResponseHead: Equatable, Sendable {
    public var version: HTTPVersion
    public var status: HTTPResponseStatus
    /// Each header line as it arrived, with CRLF, in order.
    public private(set) var headerLines: ByteBuffer
    /// What its `Content-Length` says; nil when it has none.
    public private(set) var contentLength: Int?

    public init(version: HTTPVersion, status: HTTPResponseStatus, headerLines: ByteBuffer, contentLength: Int?) {
        self.version = version
        self.status = status
        self.headerLines = headerLines
        self.contentLength = contentLength
    }

    /// Name and value of each header, in order (to store a response).
    public var headers: [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        headerLines.forEachHeaderField { field in
            headers.append((String(decoding: field.name, as: UTF8.self), String(decoding: field.value, as: UTF8.self)))
        }
        return headers
    }

    /// Leaves out every header named `name` (ASCII case ignored). Rare: the parser needs it only
    /// for a `Connection` that names end-to-end headers, or a length next to a transfer coding.
    public mutating func remove(name: String) {
        let lowercased = Array(name.lowercased().utf8)
        var kept = ByteBuffer()
        kept.reserveCapacity(headerLines.readableBytes)
        headerLines.forEachHeaderField { field in
            if !HeadSyntax.equalsIgnoringCase(field.name, lowercased) { kept.writeHeaderLine(field.line) }
        }
        headerLines = kept
        if HeadSyntax.equalsIgnoringCase(lowercased, "content-length".utf8) { contentLength = nil }
    }
}
