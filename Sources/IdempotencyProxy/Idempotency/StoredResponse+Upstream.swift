import HTTPWire
import IdempotencyCore

extension StoredResponse {
    /// A collected upstream response in its stored form: its end-to-end headers
    /// (`ResponseParser` hands on no others), with `Content-Length` stating the body size, so
    /// that the first answer and every replay are the same.
    init(upstream head: ResponseHead, body: [UInt8]) {
        let status = Int(head.status.code)
        let bodyless = status == 204 || status == 304 || status < 200
        var headers = head.headers.filter { !HopByHopHeaders.equalsIgnoringASCIICase($0.name, "content-length") }
        if !bodyless { headers.append(("Content-Length", String(body.count))) }
        self.init(status: status, headers: headers, body: body)
    }
}
