import NIOCore
import NIOHTTP1

/// A client's request head rewritten for the upstream, in the bytes that go out (docs/behaviour.md §4):
/// hop-by-hop headers and those `Connection` names gone, `X-Forwarded-For` and
/// `X-Forwarded-Proto` appended, the client's `Host` kept (a sidecar is transparent; the
/// upstream's own name is used only when the client sent none), the target under the upstream's
/// base path (`*` stays `*`), always HTTP/1.1 keep-alive.
public struct ForwardedRequest {
    public let head: ByteBuffer
    /// The body goes out chunked (it came chunked and is streamed).
    public let chunked: Bool
    /// The response will have no body whatever its headers say.
    public let isHEAD: Bool

    /// Framing: `bodyLength` (a body the proxy holds whole) is sent as `Content-Length`;
    /// otherwise the client's own framing is kept (a chunked body stays chunked).
    /// `clientProtocol`: what `X-Forwarded-Proto` says the client spoke (`http` or `https`).
    public init(
        from client: RequestHead, basePath: String, hostHeader: String, clientAddress: String?, bodyLength: Int? = nil,
        clientProtocol: String = "http"
    ) {
        var head = ByteBuffer()
        head.reserveCapacity(client.headerLines.readableBytes + client.target.utf8.count + basePath.utf8.count + 160)
        head.writeString(client.method.rawValue)
        head.writeInteger(UInt8(ascii: " "))
        // `OPTIONS *` asks about the server as a whole, not a path under the base path.
        if client.target != "*" { head.writeString(basePath) }
        head.writeString(client.target)
        head.writeStaticString(" HTTP/1.1\r\n")
        // One pass over the client's lines (this runs for every request): what is kept is
        // copied in the client's order, the framing and forwarding headers go after it.
        var forwardedFor: [String] = []
        var forwardedProto: [String] = []
        var hasHost = false
        let named = client.namedByConnection
        client.headerLines.forEachHeaderField { field in
            if HopByHopHeaders.isListed(field.name) { return }
            // Rare. What `Connection` names of our own headers is dropped with the client's values.
            if !named.isEmpty && named.contains(where: { HeadSyntax.equalsIgnoringCase(field.name, $0.utf8) }) { return }
            switch field.name.count {
            case 4 where field.hasName("host"):
                hasHost = true
            // `Expect: 100-continue` is answered by the proxy itself (it reads the body anyway).
            case 6 where field.hasName("expect"):
                return
            // The framing is written below, from what the parser made of it.
            case 14 where field.hasName("content-length"):
                return
            case 15 where field.hasName("x-forwarded-for"):
                if !field.value.isEmpty { forwardedFor.append(String(decoding: field.value, as: UTF8.self)) }
                return
            case 17 where field.hasName("x-forwarded-proto"):
                if !field.value.isEmpty { forwardedProto.append(String(decoding: field.value, as: UTF8.self)) }
                return
            default:
                break
            }
            head.writeHeaderLine(field.line)
        }
        let hasContent = Self.methodsWithContent.contains(client.method)
        var chunked = false
        if let bodyLength {
            if bodyLength > 0 || hasContent { head.writeContentLength(bodyLength) }
        } else {
            switch client.framing {
            case .chunked:
                chunked = true
                head.writeStaticString("Transfer-Encoding: chunked\r\n")
            case .length(let length):
                head.writeContentLength(length)
            case .none:
                // RFC 9110 operations: sent when the method defines a meaning for content; some
                // servers refuse these methods without it (411).
                if hasContent { head.writeContentLength(0) }
            }
        }
        if !forwardedFor.isEmpty || clientAddress != nil {
            head.writeHeader("X-Forwarded-For", forwardedFor, clientAddress)
        }
        head.writeHeader("X-Forwarded-Proto", forwardedProto, clientProtocol)
        if !hasHost { head.writeHeader("Host", [], hostHeader) }
        head.writeStaticString("\r\n")
        self.head = head
        self.chunked = chunked
        self.isHEAD = client.method == .HEAD
    }

    private static let methodsWithContent: [HTTPMethod] = [.POST, .PUT, .PATCH]
}

extension ByteBuffer {
    /// One header line: the client's fields of a list header folded into one value, then ours
    /// (usually the client sent none, and nothing is joined).
    fileprivate mutating func writeHeader(_ name: StaticString, _ fields: [String], _ last: String?) {
        writeStaticString(name)
        writeStaticString(": ")
        for (index, field) in fields.enumerated() {
            writeString(field)
            if index < fields.count - 1 || last != nil { writeStaticString(", ") }
        }
        if let last { writeString(last) }
        writeStaticString("\r\n")
    }

    fileprivate mutating func writeContentLength(_ length: Int) {
        writeStaticString("Content-Length: ")
        writeString(String(length))
        writeStaticString("\r\n")
    }
}
