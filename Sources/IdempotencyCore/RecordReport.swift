/// What one store holds under a record id, as the records API reads it.
public struct HeldRecord: Equatable, Sendable {
    public var record: IdempotencyRecord
    /// When the store stops replaying it (or its claim's lock ends), in ms since the epoch;
    /// nil: never (a Redis key without expiry).
    public var expiresAtMs: Int64?

    public init(record: IdempotencyRecord, expiresAtMs: Int64?) {
        self.record = record
        self.expiresAtMs = expiresAtMs
    }
}

/// What a store's delete found, and did (docs/behaviour.md, "The records API").
public enum ForgetResult: String, Equatable, Sendable {
    /// Nothing live there.
    case absent
    /// An in-flight claim, left alone (no `force`).
    case inFlight = "in_flight"
    /// A completed record, deleted.
    case completed
    /// An in-flight claim, made a tombstone (`force`).
    case inFlightForced = "in_flight_forced"
}

/// The records API's identifiers and answers, apart from the stores that feed them.
public enum RecordReport {
    /// The record id of a path segment: 64 hex digits, either case, as lower case; nil
    /// otherwise.
    public static func recordID(_ text: Substring) -> String? {
        guard text.utf8.count == 64, text.utf8.allSatisfy(ConfigValues.isHexDigit) else { return nil }
        return text.lowercased()
    }

    /// `GET /records/ID`'s body: the record as the record of truth holds it (PostgreSQL when it
    /// holds one, else Redis), the stores that hold it, and, when they hold different things,
    /// what each holds. nil when no store holds it.
    public static func json(id: String, redis: HeldRecord?, postgres: HeldRecord?) -> [UInt8]? {
        guard let truth = postgres ?? redis else { return nil }
        var stores: [String] = []
        if redis != nil { stores.append("\"redis\"") }
        if postgres != nil { stores.append("\"postgres\"") }
        // The last moment any store would replay it.
        let expiries = [redis, postgres].compactMap { $0 }.map(\.expiresAtMs)
        let expiresAt = expiries.contains(nil) ? nil : expiries.compactMap { $0 }.max()
        var fields = ["\"id\":\"\(id)\"", "\"stores\":[\(stores.joined(separator: ","))]"]
        fields += describe(truth) + ["\"expires_at\":\(time(expiresAt))"]
        if let redis, let postgres, describe(redis) != describe(postgres) {
            func each(_ held: HeldRecord) -> String {
                "{" + (describe(held) + ["\"expires_at\":\(time(held.expiresAtMs))"]).joined(separator: ",") + "}"
            }
            fields.append("\"by_store\":{\"redis\":\(each(redis)),\"postgres\":\(each(postgres))}")
        }
        return Array(("{" + fields.joined(separator: ",") + "}\n").utf8)
    }

    /// The fields that say what a store holds, without its expiry.
    private static func describe(_ held: HeldRecord) -> [String] {
        let record = held.record
        let fingerprint = record.fingerprint.withUnsafeBytes { RequestDigest.hex($0) }
        switch record.state {
        case .inFlight:
            return ["\"state\":\"in_flight\"", "\"fingerprint\":\"\(fingerprint)\""]
        case .completed(let response):
            return [
                "\"state\":\"completed\"", "\"status\":\(response.status)", "\"fingerprint\":\"\(fingerprint)\"",
                "\"completed_at\":\(time(record.completedAtMs))", "\"body_bytes\":\(response.body.count)",
            ]
        case .completedWithoutBody(let status, let bodyBytes):
            return [
                "\"state\":\"too_large\"", "\"status\":\(status)", "\"fingerprint\":\"\(fingerprint)\"",
                "\"completed_at\":\(time(record.completedAtMs))", "\"body_bytes\":\(bodyBytes.map(String.init) ?? "null")",
            ]
        }
    }

    private static func time(_ ms: Int64?) -> String {
        ms.map { "\"\(rfc3339($0))\"" } ?? "null"
    }

    /// `2026-12-07T10:19:06.123Z`: UTC, milliseconds, without Foundation (days to a civil date
    /// as in Howard Hinnant's `civil_from_days`).
    public static func rfc3339(_ ms: Int64) -> String {
        let (seconds, milli) = ms.quotientAndRemainder(dividingBy: 1_000)
        let (days, secondOfDay) = seconds.quotientAndRemainder(dividingBy: 86_400)
        let z = days + 719_468
        let era = z / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ n: Int64, _ width: Int) -> String {
            let digits = String(n)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3_600, 2)):\(pad(secondOfDay / 60 % 60, 2)):"
            + "\(pad(secondOfDay % 60, 2)).\(pad(milli, 3))Z"
    }
}
