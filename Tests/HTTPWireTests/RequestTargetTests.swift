import HTTPWire
import Testing

@Suite struct RequestTargetTests {
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
        #expect(RequestTarget.originForm(of: target) == origin)
    }
}
