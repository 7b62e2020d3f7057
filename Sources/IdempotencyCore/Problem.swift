/// An RFC 9457 problem: every response the proxy itself generates is one of these.
public struct Problem: Error, Equatable, Sendable {
    public var status: Int
    /// A stable URI naming the kind of problem; clients may switch on it.
    public var type: String
    public var title: String
    public var detail: String
    /// Seconds, sent as `Retry-After` when retrying later can succeed.
    public var retryAfter: Int?

    public init(status: Int, type: String, title: String, detail: String, retryAfter: Int? = nil) {
        self.status = status
        self.type = "urn:idemproxy:problem:" + type
        self.title = title
        self.detail = detail
        self.retryAfter = retryAfter
    }

    public static let contentType = "application/problem+json"

    /// The JSON body; written by hand to keep Foundation out of the hot path.
    public var json: [UInt8] {
        var out = "{\"type\":\(quoted(type)),\"title\":\(quoted(title)),\"status\":\(status),\"detail\":\(quoted(detail))}"
        out.append("\n")
        return Array(out.utf8)
    }

    private func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension Problem {
    public static func invalidKey(_ detail: String) -> Problem {
        Problem(status: 400, type: "invalid-key", title: "Invalid idempotency key", detail: detail)
    }

    public static func missingKey(header: String) -> Problem {
        Problem(status: 400, type: "missing-key", title: "Idempotency key required",
                detail: "This endpoint requires an \(header) header; send a unique key per operation and reuse it when retrying.")
    }

    public static func missingBodyKey(pointer: String) -> Problem {
        Problem(status: 400, type: "missing-key", title: "Idempotency key required",
                detail: "This endpoint takes its idempotency key from the JSON body at \(pointer); the body is not JSON there, or holds no string or integer at it.")
    }

    public static func malformedRequest(_ detail: String) -> Problem {
        Problem(status: 400, type: "malformed-request", title: "Malformed request", detail: detail)
    }

    public static func bodyTooLarge(limit: Int) -> Problem {
        Problem(status: 413, type: "body-too-large", title: "Request body too large",
                detail: "A protected request body may be at most \(limit) bytes.")
    }

    public static func headersTooLarge(limit: Int) -> Problem {
        Problem(status: 431, type: "headers-too-large", title: "Request header fields too large",
                detail: "The request headers exceed \(limit) bytes in total.")
    }

    /// Retry-After 1 s: the proxy cannot know how long the first request still takes, and a
    /// second is short next to typical API latencies' tails yet spares a retry storm.
    public static let inFlight = Problem(
        status: 409, type: "request-in-flight", title: "Request in progress",
        detail: "A request with this idempotency key is still being processed; retry after it completes.",
        retryAfter: 1)

    public static let mismatch = Problem(
        status: 422, type: "key-reused", title: "Idempotency key reused",
        detail: "This idempotency key was already used for a request with a different method, path or body; use a new key for a new operation.")

    public static let responseNotReplayable = Problem(
        status: 502, type: "response-not-replayable", title: "Original response not replayable",
        detail: "The request with this idempotency key was already executed, but its response was too large to store and replay; it is not executed again.")

    public static let upstreamUnreachable = Problem(
        status: 502, type: "upstream-unreachable", title: "Upstream unreachable",
        detail: "The upstream API could not be reached; the request was not sent and may be retried.")

    public static let upstreamBroken = Problem(
        status: 502, type: "upstream-connection-broken", title: "Upstream connection broken",
        detail: "The connection to the upstream API broke after the request was sent; it may have been executed. Retries with the same key get 409 until the claim expires.")

    public static let upstreamTimeout = Problem(
        status: 504, type: "upstream-timeout", title: "Upstream timeout",
        detail: "The upstream API did not answer in time; it may have executed the request. Retries with the same key get 409 until the claim expires.")

    public static let invalidUpstreamResponse = Problem(
        status: 502, type: "upstream-invalid-response", title: "Invalid upstream response",
        detail: "The upstream API sent a response that is not valid HTTP.")

    /// Retry-After 1 s: the Redis client reconnects within about a second of Redis coming back.
    public static let redisUnavailable = Problem(
        status: 503, type: "store-unavailable", title: "Idempotency store unavailable",
        detail: "The idempotency store (Redis) is not answering, so the request was not forwarded; retry later with the same key.",
        retryAfter: 1)

    /// Retry-After 1 s: the PostgreSQL connections are made again within about a second.
    public static let postgresUnavailable = Problem(
        status: 503, type: "long-term-store-unavailable", title: "Long-term idempotency store unavailable",
        detail: "The long-term idempotency store (PostgreSQL) is not answering, so the request was not forwarded; retry later with the same key.",
        retryAfter: 1)

    public static let recordUnreadable = Problem(
        status: 503, type: "record-unreadable", title: "Unreadable idempotency record",
        detail: "The idempotency store (Redis) holds a record for this key that this proxy cannot read (written by another version?), so the request was not forwarded: it may have run before.",
        retryAfter: 1)

    public static let longTermRecordUnreadable = Problem(
        status: 503, type: "long-term-record-unreadable", title: "Unreadable idempotency record",
        detail: "The long-term idempotency store holds a record for this key that this proxy cannot read (written by another version?), so the request was not forwarded: it may have run before.",
        retryAfter: 1)

    public static func replicasMissing(wanted: Int, got: Int) -> Problem {
        Problem(status: 503, type: "store-not-replicated", title: "Idempotency claim not replicated",
                detail: "The claim reached \(got) of \(wanted) required Redis replicas, so the request was not forwarded; retry later with the same key.",
                retryAfter: 1)
    }
}

/// The records API's answers (docs/behaviour.md, "The records API").
extension Problem {
    public static let invalidRecordID = Problem(
        status: 400, type: "invalid-record-id", title: "Invalid record id",
        detail: "A record id is the 64 hex digits the access log shows as record=…, the SHA-256 of a request's scope and key.")

    public static let recordsAPIOff = Problem(
        status: 404, type: "not-found", title: "Not found", detail: "The records API is off: it needs admin_token.")

    public static let recordMethodNotAllowed = Problem(
        status: 405, type: "method-not-allowed", title: "Method not allowed",
        detail: "A record is read with GET and deleted with DELETE.")

    public static let adminTokenRequired = Problem(
        status: 401, type: "unauthorized", title: "Unauthorized",
        detail: "The records API needs the header Authorization: Bearer <admin_token>.")

    public static let recordNotFound = Problem(
        status: 404, type: "record-not-found", title: "Record not found",
        detail: "No store holds a record with this id: it was never claimed, it expired, or it was deleted.")

    public static let recordInFlight = Problem(
        status: 409, type: "record-in-flight", title: "Request still in flight",
        detail: "The request of this record is still running, and nothing was deleted. DELETE with ?force=true deletes it anyway: the running request answers its client but stores nothing, and the next request with its key runs again.",
        retryAfter: 1)

    public static func recordStoreUnavailable(_ detail: String) -> Problem {
        Problem(status: 503, type: "store-unavailable", title: "Idempotency store unavailable", detail: detail, retryAfter: 1)
    }
}
