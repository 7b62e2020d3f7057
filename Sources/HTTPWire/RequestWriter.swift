import NIOCore

/// Writes a forwarded request's body as its head framed it (`ForwardedRequest.chunked`):
/// inside chunks, or as is (`Content-Length`, or no body).
public struct RequestWriter {
    private let chunked: Bool

    public init(chunked: Bool = false) {
        self.chunked = chunked
    }

    /// Hands `body` to `write` as it goes on the wire: as is, or inside a chunk when the
    /// request is chunked (the body itself is never copied).
    public func body(_ body: ByteBuffer, allocator: ByteBufferAllocator, _ write: (ByteBuffer) -> Void) {
        if chunked { ChunkFraming.chunk(body, allocator: allocator, write) } else { write(body) }
    }

    /// The bytes that end the body: the last chunk of a chunked request, else none.
    public var end: ByteBuffer? { chunked ? ChunkFraming.lastChunk : nil }
}
