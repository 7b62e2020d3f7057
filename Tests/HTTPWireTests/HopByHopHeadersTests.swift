import Testing

@testable import HTTPWire

@Suite struct HopByHopHeadersTests {
    @Test(arguments: [
        ("Connection", true), ("proxy-connection", true), ("KEEP-ALIVE", true), ("TE", true), ("Trailer", true),
        ("Transfer-Encoding", true), ("Upgrade", true), ("Proxy-Authenticate", true), ("Proxy-Authorization", true),
        ("Authorization", false), ("Content-Length", false), ("Connections", false), ("T", false), ("X-A", false),
    ])
    func listsConnectionScopedHeaders(name: String, listed: Bool) {
        var name = name
        #expect(name.withUTF8 { HopByHopHeaders.isListed(UnsafeRawBufferPointer($0)[...]) } == listed)
    }

    @Test func comparesNamesIgnoringASCIICase() {
        #expect(HopByHopHeaders.equalsIgnoringASCIICase("Content-Length", "content-length"))
        #expect(!HopByHopHeaders.equalsIgnoringASCIICase("Content-Lengths", "content-length"))
        #expect(!HopByHopHeaders.equalsIgnoringASCIICase("Content-Lengt", "content-length"))
    }
}
