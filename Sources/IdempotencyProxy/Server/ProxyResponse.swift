import IdempotencyCore
import NIOCore
import NIOHTTP1

/// A complete response the proxy sends in one go: a replay, a buffered upstream answer, or a problem.
struct ProxyResponse {
    var status: HTTPResponseStatus
    var headers: HTTPHeaders
    var body: ByteBuffer

    init(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    init(problem: Problem) {
        let json = problem.json
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: Problem.contentType)
        headers.add(name: "Content-Length", value: String(json.count))
        if let retryAfter = problem.retryAfter { headers.add(name: "Retry-After", value: String(retryAfter)) }
        self.init(status: HTTPResponseStatus(statusCode: problem.status), headers: headers, body: ByteBuffer(bytes: json))
    }

    /// A stored response (a replay), or a fresh one whose `body` the caller still holds, so
    /// that the first answer does not copy the bytes it just received.
    init(stored: StoredResponse, replayHeader: String?, body received: ByteBuffer? = nil) {
        var headers = HTTPHeaders()
        headers.reserveCapacity(stored.headers.count + 1)
        for (name, value) in stored.headers { headers.add(name: name, value: value) }
        if let replayHeader { headers.add(name: replayHeader, value: "true") }
        let body = received ?? ByteBuffer(bytes: stored.body)
        self.init(status: HTTPResponseStatus(statusCode: stored.status), headers: headers, body: body)
    }
}
