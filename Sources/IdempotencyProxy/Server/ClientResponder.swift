import HTTPWire
import IdempotencyCore
import NIOCore

/// What a request's executor (`ProtectedRequest`, `PassthroughExchange`) may ask of the client
/// connection its request came on; `ProxyHandler` answers. Every call ends or continues the
/// answer to that one request, never another.
protocol ClientResponder: AnyObject {
    /// A complete response. `requestEnded` false: the client is still sending the request, and
    /// the rest of it is skipped. `closing`: the connection closes after the response.
    func respond(_ response: ProxyResponse, outcome: RequestOutcome, requestEnded: Bool, closing: Bool)
    /// The head of a response passed on as it arrives.
    func writeStreamedHead(_ head: ResponseHead)
    /// Returns false while the client cannot take more.
    func writeStreamedBody(_ buffer: ByteBuffer) -> Bool
    func finishStreamed(outcome: RequestOutcome, requestEnded: Bool)
    /// The exchange failed after part of a streamed response went out: cut the connection.
    func abortStreamed()
    /// The upstream cannot take more of the request for now (or can again).
    func pauseReads()
    func resumeReads()
}
