import HTTPWire
import NIOHTTP1
import Testing

@Suite struct HopByHopHeadersTests {
    @Test(arguments: [
        ("Connection", true), ("proxy-connection", true), ("KEEP-ALIVE", true), ("TE", true), ("Trailer", true),
        ("Transfer-Encoding", true), ("Upgrade", true), ("Proxy-Authenticate", true), ("Proxy-Authorization", true),
        ("Authorization", false), ("Content-Length", false), ("Connections", false), ("T", false), ("X-A", false),
    ])
    func listsConnectionScopedHeaders(name: String, listed: Bool) {
        #expect(HopByHopHeaders.isListed(name) == listed)
    }

    @Test(arguments: [
        ("close", []), ("keep-alive, Upgrade", ["Upgrade"]), (" close ,X-Private,, x-b ", ["X-Private", "x-b"]),
        ("Keep-Alive", []), ("Content-Length, X-A", ["X-A"]),
    ] as [(String, [String])])
    func readsTheHeadersConnectionNames(value: String, named: [String]) {
        #expect(HopByHopHeaders.namedHeaders(inConnection: value).map(String.init) == named)
    }

    @Test func comparesNamesIgnoringASCIICase() {
        #expect(HopByHopHeaders.equalsIgnoringASCIICase("Content-Length", "content-length"))
        #expect(!HopByHopHeaders.equalsIgnoringASCIICase("Content-Lengths", "content-length"))
        #expect(!HopByHopHeaders.equalsIgnoringASCIICase("Content-Lengt", "content-length"))
        #expect(HopByHopHeaders.isChunked(HTTPHeaders([("Transfer-Encoding", "Chunked")])))
        #expect(HopByHopHeaders.isChunked(HTTPHeaders([("transfer-encoding", "gzip , chunked")])))
        #expect(!HopByHopHeaders.isChunked(HTTPHeaders([("Transfer-Encoding", "gzip"), ("X-Chunked", "chunked")])))
    }
}
