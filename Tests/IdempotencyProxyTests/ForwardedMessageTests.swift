import Testing

import IdempotencyCore
import NIOHTTP1

@testable import IdempotencyProxy

@Suite struct OriginFormTests {
    @Test(arguments: [
        ("/a?b", nil),
        ("*", nil),
        ("http://h/a?b", "/a?b"),
        ("HTTPS://h:8443/x", "/x"),
        ("http://h", "/"),
        ("http://h?q=1", "/?q=1"),
        ("ftp://h/x", nil),
    ] as [(String, String?)])
    func absoluteFormBecomesOriginForm(target: String, origin: String?) {
        #expect(ForwardedMessage.originForm(of: target) == origin)
    }
}

/// The request head the upstream gets, header by header and in order (SPEC §4).
@Suite struct ForwardedRequestHeadTests {
    struct Case: CustomStringConvertible, Sendable {
        let description: String
        let method: HTTPMethod
        let headers: [(String, String)]
        let bodyLength: Int?
        let expected: [(String, String)]
    }

    static let cases: [Case] = [
        Case(
            description: "hop-by-hop headers dropped, forwarding headers appended",
            method: .GET,
            headers: [
                ("Host", "api"), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic x"), ("Accept", "*/*"),
            ],
            bodyLength: nil,
            expected: [("Host", "api"), ("Accept", "*/*"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "headers named in Connection dropped",
            method: .GET,
            headers: [("Host", "api"), ("X-Trace", "1"), ("connection", "close, X-Trace"), ("Accept", "a")],
            bodyLength: nil,
            expected: [("Host", "api"), ("Accept", "a"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "Connection cannot drop the body's length, Host or the forwarding headers' new values",
            method: .POST,
            headers: [
                ("Host", "api"), ("Content-Length", "2"), ("X-Forwarded-For", "6.6.6.6"),
                ("Connection", "Content-Length, host, X-Forwarded-For"),
            ],
            bodyLength: nil,
            expected: [("Content-Length", "2"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http"), ("Host", "up:8080")]),
        Case(
            description: "earlier X-Forwarded-For and -Proto fields folded and appended to",
            method: .GET,
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
            method: .GET,
            headers: [("Accept", "a")],
            bodyLength: nil,
            expected: [("Accept", "a"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http"), ("Host", "up:8080")]),
        Case(
            description: "buffered body: its length replaces the client's framing, Expect dropped",
            method: .POST,
            headers: [("Host", "api"), ("Transfer-Encoding", "chunked"), ("Expect", "100-continue"), ("Content-Type", "t")],
            bodyLength: 3,
            expected: [
                ("Host", "api"), ("Content-Type", "t"), ("Content-Length", "3"), ("X-Forwarded-For", "10.0.0.9"),
                ("X-Forwarded-Proto", "http"),
            ]),
        Case(
            description: "buffered body: the client's Content-Length replaced",
            method: .PATCH,
            headers: [("content-length", "3"), ("Host", "api")],
            bodyLength: 3,
            expected: [("Host", "api"), ("Content-Length", "3"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "streamed chunked body stays chunked",
            method: .PUT,
            headers: [("Host", "api"), ("Transfer-Encoding", "gzip, chunked")],
            bodyLength: nil,
            expected: [
                ("Host", "api"), ("Transfer-Encoding", "chunked"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http"),
            ]),
        Case(
            description: "streamed body with a length keeps it",
            method: .PUT,
            headers: [("Host", "api"), ("Content-Length", "5")],
            bodyLength: nil,
            expected: [("Host", "api"), ("Content-Length", "5"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "POST without a body says Content-Length: 0, GET does not",
            method: .POST,
            headers: [("Host", "api")],
            bodyLength: nil,
            expected: [("Host", "api"), ("Content-Length", "0"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
        Case(
            description: "DELETE with an empty buffered body gets no Content-Length",
            method: .DELETE,
            headers: [("Host", "api")],
            bodyLength: 0,
            expected: [("Host", "api"), ("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-Proto", "http")]),
    ]

    @Test(arguments: cases)
    func rewritesTheHead(_ c: Case) {
        let client = HTTPRequestHead(version: .http1_0, method: c.method, uri: "/charges?x=1", headers: HTTPHeaders(c.headers))
        let head = ForwardedMessage.requestHead(
            from: client, clientAddress: "10.0.0.9", upstream: UpstreamURL(host: "up", port: 8080, basePath: "/v1"),
            bodyLength: c.bodyLength)
        #expect(head.headers.map { "\($0.name): \($0.value)" } == c.expected.map { "\($0.0): \($0.1)" })
        #expect(head.uri == "/v1/charges?x=1")
        #expect(head.version == .http1_1)
        #expect(head.method == c.method)
    }
}
