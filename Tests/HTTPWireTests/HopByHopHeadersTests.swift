import HTTPWire
import NIOHTTP1
import Testing

@Suite struct HopByHopHeadersTests {
    @Test(arguments: [
        ([("Content-Type", "a"), ("X-A", "b")], ["Content-Type", "X-A"]),
        ([("TE", "trailers"), ("Transfer-Encoding", "chunked"), ("X-A", "b")], ["X-A"]),
        ([("Connection", "close, X-Private"), ("x-private", "1"), ("X-Public", "2")], ["X-Public"]),
        ([("KEEP-ALIVE", "5"), ("Proxy-Connection", "keep-alive"), ("Upgrade", "h2c"), ("Trailer", "X")], []),
        ([("Proxy-Authorization", "a"), ("Proxy-Authenticate", "b"), ("Authorization", "c")], ["Authorization"]),
    ])
    func removesConnectionScopedHeaders(headers: [(String, String)], kept: [String]) {
        #expect(HopByHopHeaders.removing(from: HTTPHeaders(headers)).map(\.name) == kept)
    }

    @Test func comparesNamesIgnoringASCIICase() {
        #expect(HopByHopHeaders.equalsIgnoringASCIICase("Content-Length", "content-length"))
        #expect(!HopByHopHeaders.equalsIgnoringASCIICase("Content-Lengths", "content-length"))
        #expect(!HopByHopHeaders.equalsIgnoringASCIICase("Content-Lengt", "content-length"))
        #expect(HopByHopHeaders.isChunked(HTTPHeaders([("Transfer-Encoding", "Chunked")])))
    }
}
