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

