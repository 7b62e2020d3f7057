import NIOCore
import NIOHTTP1
import Testing

@testable import HTTPWire

/// Every transition of `ClientConnectionStateMachine`, as rows: what happens on the connection,
/// and the actions the machine answers with, written as words. A driver plays the handler: it
/// parses the client's bytes with the real `RequestParser`, takes up each head it is given
/// (POST is buffered, a target of `/refuse` is refused, anything else streamed) and reports the
/// answers a row asks for.
@Suite struct ClientConnectionStateMachineTests {
    enum Step {
        /// The client's bytes, in one read.
        case read(String)
        /// The request under way is answered: its head with `framing`, then its end.
        /// `closing`: the answer closes the connection; `ended`: the request was read whole.
        case answer(ResponseWriter.Framing = .contentLength, closing: Bool = false, ended: Bool = true)
        /// Only the head of a streamed answer goes out.
        case answerHead
        /// The handler takes up what was pipelined, as it does after an answer.
        case takePipelined
        case quiesce
        case clientClosed
        /// The idle check runs this long after the connection opened.
        case idleCheck(atMs: Int64)
    }

    struct Row: CustomTestStringConvertible {
        let name: String
        let steps: [Step]
        let expected: [String]
        var testDescription: String { name }
    }

    static let opened = NIODeadline.uptimeNanoseconds(1_000_000_000)

    /// Plays `steps`; returns each action (and answer framing) as a word.
    static func play(_ steps: [Step], idleMs: Int64 = 1_000, headMs: Int64 = 500) -> [String] {
        var machine = ClientConnectionStateMachine(now: opened, idleTimeout: .milliseconds(idleMs), headTimeout: .milliseconds(headMs))
        var parser = RequestParser()
        var log: [String] = []
        var now = opened

        func run(_ action: ClientConnectionStateMachine.Action) {
            switch action {
            case .nothing: break
            case .pauseReads: log.append("pause")
            case .startRequest(let head):
                log.append("start \(head.method.rawValue) \(head.target)")
                let kind: ClientConnectionStateMachine.Kind =
                    head.target == "/refuse" ? .refused : head.method == .POST ? .buffered : .streamed
                run(machine.requestStarted(
                    kind, version: head.version, isHEAD: head.method == .HEAD, keepAlive: head.keepAlive,
                    expectsContinue: head.expectsContinue))
            case .deliverBody(let buffer): log.append("body \(buffer.readableBytes)")
            case .deliverEnd: log.append("end")
            case .answerMalformed(_, let newRequest):
                log.append("400" + (newRequest ? " new" : " abandon"))
            case .cutResponse: log.append("cut")
            case .writeContinue: log.append("continue")
            case .close: log.append("close")
            case .closeForBug: log.append("bug")
            }
        }

        for step in steps {
            switch step {
            case .read(let bytes):
                now = now + .milliseconds(1)
                machine.readStarted(now: now)
                do {
                    try parser.feed(ByteBuffer(string: bytes)) { run(machine.received(.part($0))) }
                } catch {
                    run(machine.received(.malformed(error)))
                }
                machine.readEnded()
            case .answer(let framing, let closing, let ended):
                let connection = machine.responseHead(framing: framing, closing: closing)
                log.append("head" + (connection.map { " \($0)" } ?? ""))
                switch machine.responseEnded(requestEnded: ended, clientActive: true, now: now) {
                case .gone: log.append("gone")
                case .flush: log.append("flush")
                case .closeAfterFlush(let outputOnly): log.append(outputOnly ? "flush, close output" : "flush, close")
                }
            case .answerHead:
                let connection = machine.responseHead(framing: .contentLength)
                log.append("head" + (connection.map { " \($0)" } ?? ""))
            case .takePipelined:
                while let action = machine.nextPipelined() { run(action) }
                if !machine.hasPipelined { log.append("resume") }
            case .quiesce:
                run(machine.quiesce())
            case .clientClosed:
                log.append("gone: \(machine.clientClosed())")
            case .idleCheck(let atMs):
                switch machine.idleCheckDue(now: opened + .milliseconds(atMs)) {
                case .close: log.append("idle close")
                case .again(let at): log.append("idle again at \((at - opened).nanoseconds / 1_000_000) ms")
                }
            }
        }
        return log
    }

    static let get = "GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
    static let post = "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"

    static let rows: [Row] = [
        // Keep-alive and Connection: close.
        Row(name: "a GET is streamed, answered and the connection stays open",
            steps: [.read(get), .answer()], expected: ["start GET /a", "end", "head", "flush"]),
        Row(name: "Connection: close closes after the answer",
            steps: [.read("GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"), .answer()],
            expected: ["start GET /a", "end", "head close", "flush, close"]),
        Row(name: "an answer that closes says so and closes",
            steps: [.read(get), .answer(closing: true)], expected: ["start GET /a", "end", "head close", "flush, close"]),
        Row(name: "a body framed by the close ends keep-alive",
            steps: [.read(get), .answer(.untilClose)], expected: ["start GET /a", "end", "head close", "flush, close"]),
        Row(name: "a POST is buffered, then processed",
            steps: [.read(post), .answer()], expected: ["start POST /p", "body 3", "end", "head", "flush"]),
        // HTTP/1.0 and HEAD.
        Row(name: "HTTP/1.0 without keep-alive closes",
            steps: [.read("GET /a HTTP/1.0\r\n\r\n"), .answer()], expected: ["start GET /a", "end", "head close", "flush, close"]),
        Row(name: "HTTP/1.0 with keep-alive is told so",
            steps: [.read("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), .answer()],
            expected: ["start GET /a", "end", "head keep-alive", "flush"]),
        Row(name: "HEAD is answered like GET and stays open",
            steps: [.read("HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n"), .answer(.noBody)], expected: ["start HEAD /a", "end", "head", "flush"]),
        // 100-continue.
        Row(name: "100-continue is sent once a streamed body is wanted",
            steps: [.read("PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")],
            expected: ["start PUT /u", "continue"]),
        Row(name: "100-continue is sent for a buffered body",
            steps: [.read("POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")],
            expected: ["start POST /p", "continue"]),
        Row(name: "no 100-continue before a refusal",
            steps: [.read("POST /refuse HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"), .answer(ended: false)],
            expected: ["start POST /refuse", "head", "flush"]),
        Row(name: "no 100-continue to HTTP/1.0",
            steps: [.read("POST /p HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")], expected: ["start POST /p"]),
        // A refusal before the body, and 413 mid-body.
        Row(name: "a refused head's body is drained, then the next request is read",
            steps: [.read("POST /refuse HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n"), .answer(ended: false), .read("abc"), .read(get)],
            expected: ["start POST /refuse", "head", "flush", "start GET /a", "end"]),
        Row(name: "413 mid-body closes our side while the client still sends",
            steps: [.read("POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc"), .answer(closing: true, ended: false), .read("def")],
            expected: ["start POST /p", "body 3", "head close", "flush, close output"]),
        Row(name: "a 413 whose request then ends closes",
            steps: [.read("POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabc"), .answer(closing: true, ended: false), .read("def")],
            expected: ["start POST /p", "body 3", "head close", "flush, close output", "close"]),
        // Pipelining.
        Row(name: "a pipelined request waits for the answer before it",
            steps: [.read(get + get), .answer(), .takePipelined, .answer(), .takePipelined],
            expected: ["start GET /a", "end", "pause", "head", "flush", "start GET /a", "end", "resume", "head", "flush", "resume"]),
        Row(name: "a request after Connection: close is not taken up",
            steps: [.read("GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" + get), .answer(), .takePipelined],
            expected: ["start GET /a", "end", "head close", "flush, close", "resume"]),
        Row(name: "a request waiting behind one whose answer ends keep-alive is dropped",
            steps: [.read(get + get), .quiesce, .answer(), .takePipelined],
            expected: ["start GET /a", "end", "pause", "head close", "flush, close", "resume"]),
        Row(name: "a request waiting behind one whose answer closes is dropped",
            steps: [.read(get + get), .answer(closing: true), .takePipelined],
            expected: ["start GET /a", "end", "pause", "head close", "flush, close", "resume"]),
        Row(name: "garbage after a complete request waits for its answer, then gets 400",
            steps: [.read(get + "GARBAGE\r\n\r\n"), .answer(), .takePipelined, .answer()],
            expected: ["start GET /a", "end", "pause", "head", "flush", "400 new", "resume", "head close", "flush, close"]),
        Row(name: "garbage where a request begins gets 400",
            steps: [.read("GARBAGE\r\n\r\n"), .answer()], expected: ["400 new", "head close", "flush, close"]),
        Row(name: "garbage in a buffered body abandons it",
            steps: [.read("POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), .answer()],
            expected: ["start POST /p", "400 abandon", "head close", "flush, close"]),
        Row(name: "garbage in a streamed body before its answer abandons the exchange",
            steps: [.read("PUT /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), .answer()],
            expected: ["start PUT /u", "400 abandon", "head close", "flush, close"]),
        Row(name: "garbage in a streamed body whose answer began cuts it",
            steps: [.read("PUT /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"), .answerHead, .read("zz\r\n")],
            expected: ["start PUT /u", "head", "cut"]),
        Row(name: "garbage after a request being processed waits for its answer",
            steps: [.read(post + "GARBAGE\r\n\r\n"), .answer(), .takePipelined],
            expected: ["start POST /p", "body 3", "end", "pause", "head", "flush", "400 new", "resume"]),
        // Quiescing.
        Row(name: "quiescing closes an idle connection", steps: [.quiesce], expected: ["close"]),
        Row(name: "quiescing closes a busy one after its answer",
            steps: [.read(get), .quiesce, .answer()], expected: ["start GET /a", "end", "head close", "flush, close"]),
        Row(name: "a request begun while quiescing is not kept alive",
            steps: [.read("POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n"), .quiesce, .read("abc"), .answer()],
            expected: ["start POST /p", "body 3", "end", "head close", "flush, close"]),
        Row(name: "quiescing while a request waits in the queue closes after the queue",
            steps: [.read(get + get), .answer(), .quiesce, .takePipelined, .answer()],
            expected: ["start GET /a", "end", "pause", "head", "flush", "start GET /a", "end", "resume", "head close", "flush, close"]),
        // The client's close.
        Row(name: "a client gone mid-stream abandons its exchange",
            steps: [.read("PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc"), .clientClosed],
            expected: ["start PUT /u", "body 3", "gone: abandonStreaming"]),
        Row(name: "a client gone mid-body leaves an incomplete request",
            steps: [.read("POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc"), .clientClosed],
            expected: ["start POST /p", "body 3", "gone: incompleteRequest"]),
        Row(name: "a request read whole carries on without its client",
            steps: [.read(post), .clientClosed, .answer()], expected: ["start POST /p", "body 3", "end", "gone: carriesOn", "head", "flush"]),
        Row(name: "an idle client's close is nothing", steps: [.read(get), .answer(), .clientClosed],
            expected: ["start GET /a", "end", "head", "flush", "gone: nothing"]),
        // The deadlines (client_idle_timeout 1 s, client_header_timeout 500 ms).
        Row(name: "the first head is due 500 ms after the opening", steps: [.idleCheck(atMs: 499), .idleCheck(atMs: 500)],
            expected: ["idle again at 500 ms", "idle close"]),
        Row(name: "a head trickling in is cut off at its deadline though never silent",
            steps: [.read("GET /a HT"), .idleCheck(atMs: 400), .read("TP/1.1\r\n"), .idleCheck(atMs: 500)],
            expected: ["idle again at 500 ms", "idle close"]),
        Row(name: "a later head trickling in is due from its first byte",
            steps: [.read(get), .answer(), .read("GET /b HT"), .idleCheck(atMs: 400), .idleCheck(atMs: 502)],
            expected: ["start GET /a", "end", "head", "flush", "idle again at 502 ms", "idle close"]),
        Row(name: "between requests only the idle deadline counts",
            steps: [.read(get), .answer(), .idleCheck(atMs: 500), .idleCheck(atMs: 1_001)],
            expected: ["start GET /a", "end", "head", "flush", "idle again at 1001 ms", "idle close"]),
        Row(name: "a client waiting on the upstream is never silent",
            steps: [.read(get), .idleCheck(atMs: 5_000)], expected: ["start GET /a", "end", "idle again at 6000 ms"]),
        Row(name: "a client silent mid-body is cut off",
            steps: [.read("POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc"), .idleCheck(atMs: 1_001)],
            expected: ["start POST /p", "body 3", "idle close"]),
    ]

    @Test(arguments: rows)
    func transition(_ row: Row) {
        #expect(Self.play(row.steps) == row.expected)
    }

    @Test func anImpossibleEventClosesTheConnectionAsABug() {
        var machine = ClientConnectionStateMachine(now: Self.opened, idleTimeout: .seconds(1), headTimeout: .seconds(1))
        guard case .closeForBug = machine.received(.part(.end)) else { Issue.record("an end with no request was taken"); return }
        guard case .nothing = machine.received(.part(.body(ByteBuffer(string: "x")))) else {
            Issue.record("a closed connection took a body")
            return
        }
    }

    @Test func sheddingSeesIdleAndHeadTimesAndNothingWhileBusy() {
        var machine = ClientConnectionStateMachine(now: Self.opened, idleTimeout: .seconds(1), headTimeout: .seconds(1))
        #expect(machine.quietSince?.readingHead == true, "a head is due from the opening")
        var parser = RequestParser()
        let read = Self.opened + .milliseconds(5)
        machine.readStarted(now: read)
        var started = false
        try? parser.feed(ByteBuffer(string: Self.get)) { part in
            if case .startRequest(let head) = machine.received(.part(part)) {
                started = true
                _ = machine.requestStarted(.streamed, version: head.version, isHEAD: false, keepAlive: true, expectsContinue: false)
            }
        }
        machine.readEnded()
        #expect(started)
        #expect(machine.quietSince == nil)
        _ = machine.responseHead(framing: .contentLength)
        let answered = Self.opened + .milliseconds(9)
        #expect(machine.responseEnded(requestEnded: true, clientActive: true, now: answered) == .flush)
        #expect(machine.quietSince?.since == answered)
        #expect(machine.quietSince?.readingHead == false)
    }
}
