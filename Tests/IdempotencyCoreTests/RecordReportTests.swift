import Testing

@testable import IdempotencyCore

@Suite struct RecordReportTests {
    static let id = String(repeating: "ab", count: 32)

    @Test(arguments: [
        (String(repeating: "0a", count: 32), String(repeating: "0a", count: 32)),
        (String(repeating: "AF", count: 32), String(repeating: "af", count: 32)),
    ])
    func acceptsSixtyFourHexDigits(text: String, id: String) {
        #expect(RecordReport.recordID(Substring(text)) == id)
    }

    @Test(arguments: ["", "abc", String(repeating: "a", count: 63), String(repeating: "a", count: 65), String(repeating: "g", count: 64),
        String(repeating: "a", count: 62) + "%2", String(repeating: "a", count: 63) + "/"])
    func refusesAnythingElse(text: String) {
        #expect(RecordReport.recordID(Substring(text)) == nil)
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"),
        (Int64(951_782_400_000), "2000-02-29T00:00:00.000Z"),
        (Int64(1_796_638_746_123), "2026-12-07T10:19:06.123Z"),
        (Int64(4_102_444_799_999), "2099-12-31T23:59:59.999Z"),
    ])
    func formatsTimesAsRFC3339(ms: Int64, text: String) {
        #expect(RecordReport.rfc3339(ms) == text)
    }

    static let owner = [UInt8](repeating: 1, count: 16)
    static let fingerprint = [UInt8](repeating: 0xfe, count: 32)
    static let hexFingerprint = String(repeating: "fe", count: 32)
    static let completed = IdempotencyRecord(
        owner: owner, fingerprint: fingerprint, state: .completed(StoredResponse(status: 201, headers: [], body: Array("{}".utf8))),
        completedAtMs: 1_796_638_746_123)

    private func json(redis: HeldRecord?, postgres: HeldRecord?) -> String? {
        RecordReport.json(id: Self.id, redis: redis, postgres: postgres).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func nothingHeldIsNothingToReport() {
        #expect(json(redis: nil, postgres: nil) == nil)
    }

    @Test func aCompletedRecordInBothStoresExpiresWhenTheLaterDoes() {
        let report = json(
            redis: HeldRecord(record: Self.completed, expiresAtMs: 1_796_725_146_123),
            postgres: HeldRecord(record: Self.completed, expiresAtMs: 1_799_230_746_123))
        #expect(report == """
            {"id":"\(Self.id)","stores":["redis","postgres"],"state":"completed","status":201,"fingerprint":"\(Self.hexFingerprint)",\
            "completed_at":"2026-12-07T10:19:06.123Z","body_bytes":2,"expires_at":"2027-01-06T10:19:06.123Z"}

            """)
    }

    @Test func anInFlightClaimAndATooLargeRecord() {
        let inFlight = IdempotencyRecord(owner: Self.owner, fingerprint: Self.fingerprint, state: .inFlight)
        #expect(json(redis: HeldRecord(record: inFlight, expiresAtMs: 60_000), postgres: nil) == """
            {"id":"\(Self.id)","stores":["redis"],"state":"in_flight","fingerprint":"\(Self.hexFingerprint)","expires_at":"1970-01-01T00:01:00.000Z"}

            """)
        let tooLarge = IdempotencyRecord(
            owner: Self.owner, fingerprint: Self.fingerprint, state: .completedWithoutBody(status: 200, bodyBytes: 3_000_000))
        #expect(json(redis: nil, postgres: HeldRecord(record: tooLarge, expiresAtMs: nil)) == """
            {"id":"\(Self.id)","stores":["postgres"],"state":"too_large","status":200,"fingerprint":"\(Self.hexFingerprint)",\
            "completed_at":null,"body_bytes":3000000,"expires_at":null}

            """)
    }

    /// PostgreSQL is the record of truth; what each store holds is shown beside it.
    @Test func storesThatDisagreeAreShownApart() throws {
        let inFlight = IdempotencyRecord(owner: Self.owner, fingerprint: Self.fingerprint, state: .inFlight)
        let report = try #require(json(
            redis: HeldRecord(record: inFlight, expiresAtMs: 60_000),
            postgres: HeldRecord(record: Self.completed, expiresAtMs: 120_000)))
        #expect(report.hasPrefix("{\"id\":\"\(Self.id)\",\"stores\":[\"redis\",\"postgres\"],\"state\":\"completed\""))
        #expect(report.contains("\"by_store\":{\"redis\":{\"state\":\"in_flight\""))
        #expect(report.contains("\"postgres\":{\"state\":\"completed\",\"status\":201"))
        #expect(!json(
            redis: HeldRecord(record: Self.completed, expiresAtMs: 1), postgres: HeldRecord(record: Self.completed, expiresAtMs: 2))!
            .contains("by_store"))
    }

    @Test(arguments: [
        (["Bearer s3cret"], true),
        (["bearer s3cret"], true),
        (["BEARER s3cret"], true),
        (["Bearer s3cre"], false),
        (["Bearer s3cret "], false),
        (["Bearer  s3cret"], false),
        (["Basic s3cret"], false),
        (["s3cret"], false),
        (["Bearer "], false),
        ([], false),
        (["Bearer s3cret", "Bearer s3cret"], false),
    ])
    func adminTokenAdmitsOnlyItsBearer(headers: [String], admitted: Bool) {
        #expect(AdminToken("s3cret").admits(authorization: headers) == admitted)
    }
}
