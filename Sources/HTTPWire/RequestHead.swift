import NIOCore
import NIOHTTP1

/// A client's request head as `RequestParser` read it. The header lines stay the bytes they
/// arrived as: a passthrough request is forwarded by copying them, and only a protected one has
/// a few values (its key, its scope) decoded into strings.
public struct RequestHead: Sendable {
    public enum Framing: Equatable, Sendable {
        case none
        case length(Int)
        case chunked
    }

    public var method: HTTPMethod
    public var target: String
    public var version: HTTPVersion
    /// Every header line as it arrived (checked by the parser), each with CRLF, in order.
    public private(set) var headerLines: ByteBuffer
    public let framing: Framing
    /// The connection may carry another request after this one.
    public let keepAlive: Bool
    /// `Expect: 100-continue`.
    public let expectsContinue: Bool
    /// Headers that `Connection` names as hop-by-hop, lower-cased (rare).
    public let namedByConnection: [String]

    public init(
        method: HTTPMethod, target: String, version: HTTPVersion, headerLines: ByteBuffer, framing: Framing,
        keepAlive: Bool, expectsContinue: Bool, namedByConnection: [String]
    ) {
        self.method = method
        self.target = target
        self.version = version
        self.headerLines = headerLines
        self.framing = framing
        self.keepAlive = keepAlive
        self.expectsContinue = expectsContinue
        self.namedByConnection = namedByConnection
    }

    /// Copies the header lines out of the read buffer they are a slice of: a head kept while
    /// Redis and the upstream answer would otherwise keep that whole buffer alive.
    public mutating func detach() {
        var lines = ByteBufferAllocator().buffer(capacity: headerLines.readableBytes)
        lines.writeImmutableBuffer(headerLines)
        headerLines = lines
    }

    /// The values of every header named `name` (ASCII case ignored), trimmed, in order.
    public func values(named name: String) -> [String] {
        let lowercased = name.lowercased()
        var values: [String] = []
        headerLines.forEachHeaderField { field in
            if HeadSyntax.equalsIgnoringCase(field.name, lowercased.utf8) {
                values.append(String(decoding: field.value, as: UTF8.self))
            }
        }
        return values
    }
}
