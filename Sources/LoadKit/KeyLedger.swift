/// What happened to one idempotency key across all its attempts.
public struct KeyLedger: Sendable {
    /// A complete answer the client actually read.
    public struct Answer: Sendable, Equatable {
        public var status: Int
        public var body: [UInt8]
        public var replayed: Bool

        public init(status: Int, body: [UInt8], replayed: Bool) {
            self.status = status
            self.body = body
            self.replayed = replayed
        }
    }

    public private(set) var attempts = 0
    public private(set) var losses = 0
    public private(set) var errors = 0
    /// Answers that end the key (not 409, 429 or 5xx gateway answers, which are retried).
    public private(set) var finalAnswers: [Answer] = []
    public private(set) var retryableAnswers = 0

    public init() {}

    /// Statuses after which the client tries again with the same key.
    public static func isRetryable(_ status: Int) -> Bool {
        [409, 429, 502, 503, 504].contains(status)
    }

    public mutating func attemptStarted() { attempts += 1 }
    public mutating func lost() { losses += 1 }
    public mutating func failed() { errors += 1 }

    public mutating func answered(_ answer: Answer) {
        if Self.isRetryable(answer.status) { retryableAnswers += 1 } else { finalAnswers.append(answer) }
    }

    public var isDone: Bool { !finalAnswers.isEmpty }

    /// The key's answer, if it got one.
    public var final: Answer? { finalAnswers.last }

    /// True when two complete final answers for this key differ in status or body bytes.
    public var hasMismatch: Bool {
        guard let first = finalAnswers.first else { return false }
        return finalAnswers.dropFirst().contains { $0.status != first.status || $0.body != first.body }
    }
}
