import NIOCore
import NIOHTTP1

/// One client connection as a pure state machine, in the shape of AsyncHTTPClient's
/// `HTTP1ConnectionStateMachine`: the handler (`ProxyHandler`) reports what happened, with the
/// time as an argument, and carries out the action it gets back. Every rule of the connection
/// (pipelining, keep-alive, quiescing, the head and idle deadlines, what a malformed request or
/// a closed client does to the request under way) is a row of its table test; the handler keeps
/// only the request's work (its exchange) and the writes.
///
///     readingHead ─► (head) ─┬─► streaming ────────────────┬─► (answer) ─┬─► idle ─► readingHead …
///                            ├─► buffering ─► processing ──┤              ├─► draining ─► (end) ─► idle
///                            └─► refused ──────────────────┘              └─► closed
///
/// It serves one request at a time: what a client pipelines behind the request under way waits
/// in `pipelined` (reads pause meanwhile) and is taken up, in order, once that request is
/// answered; so are bytes that are not HTTP, which get their 400 only after every request
/// before them got its answer (RFC 9112 §9.3.2).
public struct ClientConnectionStateMachine {
    /// What a client sent, in order: request parts, or where its bytes stopped being HTTP.
    public enum Inbound {
        case part(RequestParser.Part)
        case malformed(RequestParser.ParseError)
    }

    /// How the handler took up a request head.
    public enum Kind: Equatable, Sendable {
        /// Streamed to the upstream as it is read (unprotected).
        case streamed
        /// Its body is collected before anything is decided (protected).
        case buffered
        /// Answered at once by the proxy (a refused key or size), which is under way.
        case refused
    }

    /// One request's own facts, needed to frame its answer; they go with it.
    public struct Request: Equatable, Sendable {
        public let version: HTTPVersion
        public let isHEAD: Bool
        /// The connection carries another request after this one.
        public fileprivate(set) var keepAlive: Bool
    }

    enum State: Equatable {
        /// No request under way and no byte of the next one, since then.
        case idle(since: NIODeadline)
        /// A head is due: its first byte came (or the connection opened) then.
        case readingHead(since: NIODeadline)
        /// Streaming to the upstream; `ended`: the request has been read to its end.
        case streaming(Request, ended: Bool, answering: Bool)
        /// Collecting the body of a protected request.
        case buffering(Request, answering: Bool)
        /// The protected request has been read whole; its answer is being worked out.
        case processing(Request)
        /// Answered by the connection itself; lasts while the answer is written.
        case refused(Request)
        /// The answer went out before the request ended: the rest of the request is skipped.
        case draining(keepAlive: Bool)
        /// Closing or closed: nothing more is read or answered.
        case closed
    }

    public enum Action {
        case nothing
        /// A request waits behind the one under way: hold reads until it is taken up.
        case pauseReads
        /// A request head, to be taken up: the handler reports `requestStarted`.
        case startRequest(RequestHead)
        /// Body bytes of the request under way, for its work.
        case deliverBody(ByteBuffer)
        /// The request under way has been read to its end.
        case deliverEnd
        /// Answer `error` with 400 (or 431), then close. `newRequest`: the bytes are where a
        /// request should have begun, the answer is that request's; else the request under way
        /// is dropped, its upstream exchange (if any) abandoned, and the answer is its.
        case answerMalformed(RequestParser.ParseError, newRequest: Bool)
        /// Part of a response is out and the request cannot go on: abandon the work, count the
        /// request as `passthrough`, and close; the close is the only honest signal left.
        case cutResponse
        /// Send `100 Continue`: the body is wanted.
        case writeContinue
        case close
        /// An event the connection's state cannot have: close it, and log why.
        case closeForBug(String)
    }

    /// What follows a complete answer.
    public enum AfterResponse: Equatable {
        /// The client is gone: nothing to write.
        case gone
        /// Flush; the connection carries on (with the next pipelined request, if one waits).
        case flush
        /// Flush, then close: `outputOnly` while the client may still be sending, so that the
        /// kernel does not answer its bytes with a reset that could destroy the response.
        case closeAfterFlush(outputOnly: Bool)
    }

    /// What the client's close means for the request under way.
    public enum ClientGone: Equatable {
        /// Nothing was under way, or it was already answered.
        case nothing
        /// A streamed exchange: abandon it and count it as `passthrough`.
        case abandonStreaming
        /// A protected request not yet read whole: counted as a bad request.
        case incompleteRequest
        /// A protected request read whole carries on (rule 10); it is counted when it ends.
        case carriesOn
    }

    public enum IdleCheck: Equatable {
        case close
        case again(at: NIODeadline)
    }

    private(set) var state: State
    private var pipelined = CircularBuffer<Inbound>()
    /// Graceful shutdown: the connection closes after its current response.
    private var quiescing = false
    private var lastRead: NIODeadline
    /// `client_idle_timeout`: a client silent this long while the proxy waits on it is cut off,
    /// never one waiting on the upstream.
    private let idleTimeout: TimeAmount
    /// `client_header_timeout`: a head must arrive whole within it from its first byte (from the
    /// opening for the first head, nginx's meaning). A client trickling a head a byte at a time
    /// is never silent, but is cut off too.
    private let headTimeout: TimeAmount

    public init(now: NIODeadline, idleTimeout: TimeAmount, headTimeout: TimeAmount) {
        state = .readingHead(since: now)
        lastRead = now
        self.idleTimeout = idleTimeout
        self.headTimeout = headTimeout
    }

    /// The request under way, while there is one to answer.
    public var request: Request? {
        switch state {
        case .streaming(let request, _, _), .buffering(let request, _), .processing(let request), .refused(let request):
            return request
        case .idle, .readingHead, .draining, .closed:
            return nil
        }
    }

    /// Something waits behind the request under way.
    public var hasPipelined: Bool { !pipelined.isEmpty }

    /// For shedding at `max_connections`: since when the connection has given nothing, and
    /// whether it is in the middle of a head; nil while a request is under way or waits.
    public var quietSince: (since: NIODeadline, readingHead: Bool)? {
        guard pipelined.isEmpty else { return nil }
        switch state {
        case .idle(let since): return (since, false)
        case .readingHead(let since): return (since, true)
        case .streaming, .buffering, .processing, .refused, .draining, .closed: return nil
        }
    }

    // MARK: - reading

    /// What the parser found, in order.
    public mutating func received(_ inbound: Inbound) -> Action {
        if case .closed = state { return .nothing }
        if !pipelined.isEmpty || mustWait(inbound) {
            pipelined.append(inbound)
            return pipelined.count == 1 ? .pauseReads : .nothing
        }
        return take(inbound)
    }

    /// Bytes arrived; `received` follows for what the parser found in them.
    public mutating func readStarted(now: NIODeadline) {
        lastRead = now
    }

    /// The parser has seen the whole read. Between requests, a head is now due: bytes of one
    /// may be left over in the parser (a read that ended with an answer counts too, so a
    /// connection that pipelines nothing after it is due as well).
    public mutating func readEnded() {
        if case .idle = state { state = .readingHead(since: lastRead) }
    }

    /// The next pipelined request (or malformed bytes) to take up now that the one before was
    /// answered; nil when nothing waits or it must wait longer.
    public mutating func nextPipelined() -> Action? {
        guard let next = pipelined.first, state != .closed, !mustWait(next) else { return nil }
        pipelined.removeFirst()
        return take(next)
    }

    /// A new request (or the malformed bytes where one should be) waits until the current one
    /// is answered; the current one's parts do not.
    private func mustWait(_ inbound: Inbound) -> Bool {
        switch inbound {
        case .part(.head): return !isBetweenRequests
        case .part: return false
        case .malformed: return requestComplete
        }
    }

    private var isBetweenRequests: Bool {
        switch state {
        case .idle, .readingHead: return true
        default: return false
        }
    }

    /// The request under way has been read to its end: what follows belongs to a later one.
    private var requestComplete: Bool {
        switch state {
        case .processing: return true
        case .streaming(_, let ended, _): return ended
        case .idle, .readingHead, .buffering, .refused, .draining, .closed: return false
        }
    }

    private mutating func take(_ inbound: Inbound) -> Action {
        switch inbound {
        case .part(.head(let head)):
            return .startRequest(head)
        case .part(.body(let buffer)):
            switch state {
            case .streaming, .buffering: return .deliverBody(buffer)
            case .draining, .closed: return .nothing
            case .idle, .readingHead, .processing, .refused: return closeForBug("request body in state \(state)")
            }
        case .part(.end):
            return requestEnded()
        case .malformed(let error):
            return malformed(error)
        }
    }

    private mutating func requestEnded() -> Action {
        switch state {
        case .streaming(let request, _, let answering):
            state = .streaming(request, ended: true, answering: answering)
            return .deliverEnd
        case .buffering(let request, _):
            state = .processing(request)
            return .deliverEnd
        case .draining(let keepAlive):
            guard keepAlive else {
                state = .closed
                return .close
            }
            state = .idle(since: lastRead)
            return .nothing
        case .closed:
            return .nothing
        case .idle, .readingHead, .processing, .refused:
            return closeForBug("request end in state \(state)")
        }
    }

    /// Malformed bytes reached in turn: answered with 400 unless an answer to the request they
    /// are part of is decided or out; the connection closes either way, since the byte stream
    /// cannot be trusted to find the next request.
    private mutating func malformed(_ error: RequestParser.ParseError) -> Action {
        pipelined.removeAll()
        switch state {
        case .idle, .readingHead:
            state = .refused(Request(version: .http1_1, isHEAD: false, keepAlive: false))
            return .answerMalformed(error, newRequest: true)
        case .buffering(let request, answering: false), .streaming(let request, _, answering: false):
            // The protected request had claimed nothing yet; a streamed one's head went upstream
            // and its body cannot be finished: either is dropped.
            state = .refused(Request(version: request.version, isHEAD: request.isHEAD, keepAlive: false))
            return .answerMalformed(error, newRequest: false)
        case .streaming(_, _, answering: true):
            state = .closed
            return .cutResponse
        case .processing:
            // What follows a whole request waits for its answer.
            return closeForBug("malformed bytes taken while a request is processed")
        case .buffering(_, answering: true), .refused, .draining, .closed:
            state = .closed
            return .close
        }
    }

    /// The handler took up the head `.startRequest` gave it.
    public mutating func requestStarted(_ kind: Kind, version: HTTPVersion, isHEAD: Bool, keepAlive: Bool, expectsContinue: Bool)
        -> Action
    {
        guard isBetweenRequests else { return closeForBug("a request started in state \(state)") }
        let request = Request(version: version, isHEAD: isHEAD, keepAlive: keepAlive && !quiescing)
        switch kind {
        case .streamed: state = .streaming(request, ended: false, answering: false)
        case .buffered: state = .buffering(request, answering: false)
        case .refused:
            state = .refused(request)
            return .nothing
        }
        // Never before a 4xx, never to an HTTP/1.0 client, which cannot take a 1xx (RFC 9110 §15.2).
        return expectsContinue && version.minor >= 1 ? .writeContinue : .nothing
    }

    // MARK: - answering

    /// An answer's head is about to be written with `framing`: its `Connection` header, if any.
    /// A body framed by the close ends keep-alive; an HTTP/1.0 client learns of keep-alive only
    /// from the header.
    public mutating func responseHead(framing: ResponseWriter.Framing, closing: Bool = false) -> StaticString? {
        guard let request = updateRequest(answering: true, { if framing == .untilClose || closing { $0.keepAlive = false } }) else {
            return nil
        }
        if !request.keepAlive { return "close" }
        return request.version.minor == 0 ? "keep-alive" : nil
    }

    /// Changes the request under way in place (`answering`: its answer has begun); the request
    /// as changed, nil when there is none.
    private mutating func updateRequest(answering: Bool, _ change: (inout Request) -> Void) -> Request? {
        switch state {
        case .streaming(var request, let ended, let answered):
            change(&request)
            state = .streaming(request, ended: ended, answering: answered || answering)
            return request
        case .buffering(var request, let answered):
            change(&request)
            state = .buffering(request, answering: answered || answering)
            return request
        case .processing(var request):
            change(&request)
            state = .processing(request)
            return request
        case .refused(var request):
            change(&request)
            state = .refused(request)
            return request
        case .idle, .readingHead, .draining, .closed:
            return nil
        }
    }

    /// The answer is complete. `requestEnded`: the request has been read to its end (else the
    /// rest is skipped); `clientActive`: the connection is still open.
    public mutating func responseEnded(requestEnded: Bool, clientActive: Bool, now: NIODeadline) -> AfterResponse {
        guard let request else { return .gone }
        guard clientActive else {
            state = .closed
            return .gone
        }
        if !requestEnded {
            state = .draining(keepAlive: request.keepAlive)
        } else {
            state = request.keepAlive ? .idle(since: now) : .closed
        }
        guard request.keepAlive else {
            pipelined.removeAll()
            return .closeAfterFlush(outputOnly: !requestEnded)
        }
        return .flush
    }

    /// A response was cut short mid-way (the upstream failed after its head went out).
    public mutating func responseCut() {
        state = .closed
        pipelined.removeAll()
    }

    // MARK: - connection events

    /// The client's connection closed.
    public mutating func clientClosed() -> ClientGone {
        pipelined.removeAll()
        switch state {
        case .streaming:
            state = .closed
            return .abandonStreaming
        case .buffering:
            state = .closed
            return .incompleteRequest
        case .processing:
            // It is answered (to a closed channel) and counted when its answer comes.
            return .carriesOn
        case .idle, .readingHead, .refused, .draining, .closed:
            state = .closed
            return .nothing
        }
    }

    /// SIGTERM: idle connections close now, busy ones after their response (which says
    /// `Connection: close` if its head has not gone out yet).
    public mutating func quiesce() -> Action {
        quiescing = true
        switch state {
        case .streaming, .buffering, .processing, .refused:
            _ = updateRequest(answering: false) { $0.keepAlive = false }
        case .draining:
            state = .draining(keepAlive: false)
        case .idle, .readingHead:
            guard pipelined.isEmpty else { return .nothing }
            state = .closed
            return .close
        case .closed:
            break
        }
        return .nothing
    }

    /// When to look for a silent client first.
    public var firstIdleCheck: NIODeadline { lastRead + min(idleTimeout, headTimeout) }

    /// The idle check came due: close a client silent for `client_idle_timeout` while the proxy
    /// waits on it, or one whose head is overdue; else look again when that could first be.
    public mutating func idleCheckDue(now: NIODeadline) -> IdleCheck {
        var silentUntil = lastRead + idleTimeout
        if case .readingHead(let since) = state { silentUntil = min(silentUntil, since + headTimeout) }
        guard now >= silentUntil else { return .again(at: silentUntil) }
        // The client waits on the upstream, not the other way round.
        if requestComplete { return .again(at: now + idleTimeout) }
        // The state moves on when the close is reported (`clientClosed`): the request under way
        // is abandoned and counted then.
        return .close
    }

    private mutating func closeForBug(_ why: String) -> Action {
        state = .closed
        pipelined.removeAll()
        return .closeForBug(why)
    }
}
