import NIOCore
import Testing

@testable import HTTPWire

/// The request head the upstream gets, header by header and in order (docs/behaviour.md §4).
@Suite struct ForwardedRequestTests {
    struct Case: CustomStringConvertible, Sendable {
        let description: String
        let method: String
        let headers: [(String, String)]
        let bodyLength: Int?
        let expected: [(String, String)]
    }

    static let cases: [Case] = [
        Case(
            description: "hop-by-hop headers dropped, forwarding headers appended",
            method: "GET",
            headers: [
                ("Host", "api"), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic x"), ("Accept", "*/*"),
            ],
            bodyLength: nil,
            expected: [("Host", "api"), ("Accept", "*/*"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "headers named in Connection dropped",
            method: "GET",
            headers: [("Host", "api"), ("X-Trace", "1"), ("connection", "close, X-Trace"), ("Accept", "a")],
            bodyLength: nil,
            expected: [("Host", "api"), ("Accept", "a"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "Connection cannot drop the body's length, Host or the forwarding headers' new values",
            method: "POST",
            headers: [
                ("Host", "api"), ("Content-Length", "2"), ("X-Forwarded-For", "6.6.6.6"),
                ("Connection", "Content-Length, host, X-Forwarded-For"),
            ],
            bodyLength: nil,
            expected: [("Content-Length", "2"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http"), ("Host", "up:8080")]),
        Case(
            description: "earlier X-Forwarded-For and -Proto fields folded and appended to",
            method: "GET",
            headers: [
                ("X-Forwarded-For", "1.1.1.1"), ("Host", "api"), ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
                ("X-Forwarded-Proto", "https"),
            ],
            bodyLength: nil,
            expected: [
                ("Host", "api"), ("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"),
                ("X-Forwarded-Proto", "https, http"),
            ]),
        Case(
            description: "no Host: the upstream's own",
            method: "GET",
            headers: [("Accept", "a")],
            bodyLength: nil,
            expected: [("Accept", "a"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http"), ("Host", "up:8080")]),
        Case(
            description: "buffered body: its length replaces the client's framing, Expect dropped",
            method: "POST",
            headers: [("Host", "api"), ("Transfer-Encoding", "chunked"), ("Expect", "100-continue"), ("Content-Type", "t")],
            bodyLength: 3,
            expected: [
                ("Host", "api"), ("Content-Type", "t"), ("Content-Length", "3"), ("X-Forwarded-For", "10.0.0.9"),
                ("X-Forwarded-Proto", "http"),
            ]),
        Case(
            description: "buffered body: the client's Content-Length replaced",
            method: "PATCH",
            headers: [("content-length", "3"), ("Host", "api")],
            bodyLength: 3,
            expected: [("Host", "api"), ("Content-Length", "3"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "streamed chunked body stays chunked",
            method: "PUT",
            headers: [("Host", "api"), ("Transfer-Encoding", "chunked")],
            bodyLength: nil,
            expected: [
                ("Host", "api"), ("Transfer-Encoding", "chunked"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http"),
            ]),
        Case(
            description: "streamed body with a length keeps it",
            method: "PUT",
            headers: [("Host", "api"), ("Content-Length", "5")],
            bodyLength: nil,
            expected: [("Host", "api"), ("Content-Length", "5"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "POST without a body says Content-Length: 0, GET does not",
            method: "POST",
            headers: [("Host", "api")],
            bodyLength: nil,
            expected: [("Host", "api"), ("Content-Length", "0"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "DELETE with an empty buffered body gets no Content-Length",
            method: "DELETE",
            headers: [("Host", "api")],
            bodyLength: 0,
            expected: [("Host", "api"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
    ]

    @Test(arguments: cases)
    func rewritesTheHead(_ c: Case) throws {
        let wire = "\(c.method) /charges?x=1 HTTP/1.1\r\n" + c.headers.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
        let forwarded = ForwardedRequest(
            from: try RequestHead.parsed(from: ByteBuffer(string: wire)), basePath: "/v1", hostHeader: "up:8080", clientAddress: "10.0.0.9",
            bodyLength: c.bodyLength)
        let expected = "\(c.method) /v1/charges?x=1 HTTP/1.1\r\n" + c.expected.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
        #expect(String(buffer: forwarded.head) == expected)
        #expect(forwarded.chunked == c.expected.contains { $0 == ("Transfer-Encoding", "chunked") })
    }

    /// With no client address (a unix socket), the client's own fields go on as they were.
    @Test func withoutAClientAddressTheClientsFieldsStay() throws {
        let client = try RequestHead.parsed(
            from: ByteBuffer(string: "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 1.1.1.1\r\n\r\n"))
        let forwarded = ForwardedRequest(from: client, basePath: "", hostHeader: "up", clientAddress: nil)
        #expect(String(buffer: forwarded.head)
            == "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1, 1.1.1.1\r\nX-Forwarded-Proto: http\r\nHost: up\r\n\r\n")
    }

    /// `OPTIONS *` is about the upstream as a whole: it does not become a path under the base path.
    @Test func optionsAsteriskStaysAnAsterisk() throws {
        let client = try RequestHead.parsed(from: ByteBuffer(string: "OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n"))
        let forwarded = ForwardedRequest(from: client, basePath: "/v1", hostHeader: "up", clientAddress: nil)
        #expect(String(buffer: forwarded.head).hasPrefix("OPTIONS * HTTP/1.1\r\n"))
    }
}
