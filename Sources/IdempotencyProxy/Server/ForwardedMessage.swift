import HTTPWire
import IdempotencyCore
import NIOHTTP1

/// How a message is rewritten as it crosses the proxy (SPEC §4).
enum ForwardedMessage {
    /// The request as the upstream sees it: hop-by-hop headers gone, `X-Forwarded-For` and
    /// `X-Forwarded-Proto` appended, the client's `Host` kept (a sidecar is transparent; the
    /// upstream's own name is used only when the client sent none), the target under the
    /// upstream's base path, always HTTP/1.1 keep-alive.
    ///
    /// Framing: `bodyLength` (a body the proxy holds whole) is sent as `Content-Length`;
    /// otherwise the client's own framing is kept (a chunked body stays chunked).
    static func requestHead(
        from client: HTTPRequestHead,
        clientAddress: String?,
        upstream: UpstreamURL,
        bodyLength: Int? = nil
    ) -> HTTPRequestHead {
        // One pass over the client's headers (this runs for every request): what is kept goes
        // out in the client's order, the framing and forwarding headers after it.
        var headers = HTTPHeaders()
        headers.reserveCapacity(client.headers.count + 4)
        var forwardedFor: [String] = []
        var forwardedProto: [String] = []
        var namedByConnection: [Substring] = []
        var hasLength = false
        var chunked = false
        var hasHost = false
        for (name, value) in client.headers {
            if HopByHopHeaders.isListed(name) {
                if HopByHopHeaders.equalsIgnoringASCIICase(name, "connection") {
                    namedByConnection += HopByHopHeaders.namedHeaders(inConnection: value)
                } else if HopByHopHeaders.equalsIgnoringASCIICase(name, "transfer-encoding") {
                    chunked = chunked || HopByHopHeaders.namesChunked(value)
                }
                continue
            }
            switch name.utf8.count {
            case 4 where HopByHopHeaders.equalsIgnoringASCIICase(name, "host"):
                hasHost = true
            // `Expect: 100-continue` is answered by the proxy itself (it reads the body anyway).
            case 6 where HopByHopHeaders.equalsIgnoringASCIICase(name, "expect"):
                continue
            case 14 where HopByHopHeaders.equalsIgnoringASCIICase(name, "content-length"):
                if bodyLength != nil { continue }
                hasLength = true
            case 15 where HopByHopHeaders.equalsIgnoringASCIICase(name, "x-forwarded-for"):
                forwardedFor.append(value)
                continue
            case 17 where HopByHopHeaders.equalsIgnoringASCIICase(name, "x-forwarded-proto"):
                forwardedProto.append(value)
                continue
            default:
                break
            }
            headers.add(name: name, value: value)
        }
        for name in namedByConnection {
            // Rare. `HopByHopHeaders` never names Content-Length; what it may name of our own
            // headers is dropped with the client's values.
            let name = String(name)
            switch name.lowercased() {
            case "host": hasHost = false
            case "x-forwarded-for": forwardedFor = []
            case "x-forwarded-proto": forwardedProto = []
            default: break
            }
            headers.remove(name: name)
        }
        // Framing: a body the proxy holds whole goes with its length; otherwise the client's
        // own framing is kept (a chunked body stays chunked).
        if let bodyLength {
            if bodyLength > 0 || Self.methodsWithContent.contains(client.method) {
                headers.add(name: "Content-Length", value: String(bodyLength))
            }
        } else if chunked && !hasLength {
            headers.add(name: "Transfer-Encoding", value: "chunked")
        } else if !hasLength && Self.methodsWithContent.contains(client.method) {
            // RFC 9110 §8.6: sent when the method defines a meaning for content; some servers
            // refuse these methods without it (411).
            headers.add(name: "Content-Length", value: "0")
        }
        if let clientAddress { forwardedFor.append(clientAddress) }
        if !forwardedFor.isEmpty { headers.add(name: "X-Forwarded-For", value: listValue(forwardedFor)) }
        forwardedProto.append("http")
        headers.add(name: "X-Forwarded-Proto", value: listValue(forwardedProto))
        if !hasHost { headers.add(name: "Host", value: upstream.hostHeader) }
        return HTTPRequestHead(
            version: .http1_1, method: client.method, uri: upstream.basePath + client.uri, headers: headers)
    }

    private static let methodsWithContent: [HTTPMethod] = [.POST, .PUT, .PATCH]

    /// Fields of a list header folded into one value (usually there is just ours).
    private static func listValue(_ fields: [String]) -> String {
        fields.count == 1 ? fields[0] : fields.joined(separator: ", ")
    }

    /// The origin-form (`/path?query`) of an absolute-form target (`http://host/path?query`),
    /// which a server must accept (RFC 9112 §3.2.2); nil for any other target. The upstream
    /// gets the origin-form, and the fingerprint does not depend on which form a client used.
    static func originForm(of target: String) -> String? {
        guard target.utf8.first != UInt8(ascii: "/") else { return nil }
        let lowered = target.prefix(8).lowercased()
        let scheme = lowered.hasPrefix("http://") ? 7 : lowered.hasPrefix("https://") ? 8 : nil
        guard let scheme else { return nil }
        let afterScheme = target.dropFirst(scheme)
        guard let pathStart = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) else { return "/" }
        let rest = afterScheme[pathStart...]
        return rest.hasPrefix("?") ? "/" + rest : String(rest)
    }

    /// A buffered upstream response in its stored form: its end-to-end headers (`ResponseParser`
    /// hands on no others), with `Content-Length` stating the body size so that the first
    /// answer and every replay are the same.
    static func storedResponse(head: ResponseHead, body: [UInt8]) -> StoredResponse {
        let status = Int(head.status.code)
        let bodyless = status == 204 || status == 304 || status < 200
        var headers = head.headers.filter { !HopByHopHeaders.equalsIgnoringASCIICase($0.name, "content-length") }
        if !bodyless { headers.append(("Content-Length", String(body.count))) }
        return StoredResponse(status: status, headers: headers, body: body)
    }
}
