import Testing

@testable import IdempotencyCore

@Suite struct IdempotencyRecordTests {
    static let owner = [UInt8](repeating: 7, count: 16)
    static let fp = [UInt8](0..<32)

    static let records: [IdempotencyRecord] = [
        IdempotencyRecord(owner: owner, fingerprint: fp, state: .inFlight),
        IdempotencyRecord(
            owner: owner, fingerprint: fp, state: .completed(StoredResponse(status: 201, headers: [], body: [])),
            completedAtMs: 1_796_638_746_123),
        IdempotencyRecord(
            owner: owner, fingerprint: fp,
            state: .completed(StoredResponse(
                status: 200,
                headers: [("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
                body: Array("{\"id\":\"ch_1\"}\0\r\n".utf8)))),
        IdempotencyRecord(owner: owner, fingerprint: fp, state: .completedWithoutBody(status: 200, bodyBytes: 5_000_000), completedAtMs: 1),
        // Unknown time and size (as a version 1 record has them) stay unknown.
        IdempotencyRecord(owner: owner, fingerprint: fp, state: .completedWithoutBody(status: 200, bodyBytes: nil)),
    ]

    @Test(arguments: records)
    func roundTrips(_ record: IdempotencyRecord) throws {
        #expect(try IdempotencyRecord.decode(record.encoded()) == record)
    }

    @Test func ownerSitsAtTheOffsetTheLuaScriptsRead() {
        let bytes = Self.records[0].encoded()
        #expect(bytes[0] == 1, "an in-flight claim is written as version 1")
        #expect(Self.records[1].encoded()[0] == 2)
        #expect(bytes[1] == 1)
        #expect(Array(bytes[2..<18]) == Self.owner)
        let tombstone = IdempotencyRecord.tombstone(owner: Self.owner)
        #expect(tombstone[1] == IdempotencyRecord.tombstoneState && Array(tombstone[2..<18]) == Self.owner)
    }

    /// Records written by idemproxy 0.6 (version 1) are still replayed.
    @Test func readsVersionOneRecords() throws {
        let header: [UInt8] = [1, 2] + Self.owner + Self.fp
        let completed = header + [0, 201, 0, 1, 0, 1] + Array("A".utf8) + [0, 0, 0, 1] + Array("b".utf8) + [0, 0, 0, 2] + Array("ok".utf8)
        let record = try IdempotencyRecord.decode(completed)
        #expect(record.state == .completed(StoredResponse(status: 201, headers: [("A", "b")], body: Array("ok".utf8))))
        #expect(record.completedAtMs == nil && record.owner == Self.owner)
        let tooLarge = try IdempotencyRecord.decode([1, 3] + Self.owner + Self.fp + [0, 200])
        #expect(tooLarge.state == .completedWithoutBody(status: 200, bodyBytes: nil))
    }

    static let zeros48 = [UInt8](repeating: 0, count: 48)
    static let malformed: [([UInt8], String)] = [
        ([], "truncated"),
        ([9, 1] + zeros48, "version 9"),
        ([2, 4] + zeros48, "unknown record state 4"),
        ([2, 3] + zeros48 + [0, 0, 0, 0, 0, 0, 0, 1, 0, 200, 255, 0, 0, 0, 0, 0, 0, 0], "out of range"),
        ([1, 7] + zeros48, "unknown record state 7"),
        ([1, 1] + [UInt8](repeating: 0, count: 20), "truncated"),
        ([1, 1] + zeros48 + [0], "bytes after its end"),
        ([1, 2] + zeros48 + [0, 200, 0, 1, 0, 5, 65], "truncated"),
        ([1, 3] + zeros48 + [0, 99], "status 99 is not an HTTP status"),
        ([1, 2] + zeros48 + [3, 232, 0, 0, 0, 0, 0, 0], "status 1000 is not an HTTP status"),
        // A header that would split the replayed response: `X: a\r\nSet-Cookie: evil`.
        ([1, 2] + zeros48 + [0, 200, 0, 1, 0, 1] + Array("X".utf8) + [0, 0, 0, 19]
            + Array("a\r\nSet-Cookie: evil".utf8) + [0, 0, 0, 0], "control character in a header value"),
        ([1, 2] + zeros48 + [0, 200, 0, 1, 0, 3] + Array("X Y".utf8) + [0, 0, 0, 1, 65, 0, 0, 0, 0], "header name is not a token"),
        ([1, 2] + zeros48 + [0, 200, 0, 1, 0, 0, 0, 0, 0, 1, 65, 0, 0, 0, 0], "header name is not a token"),
    ]

    @Test(arguments: malformed)
    func refusesMalformedBytes(bytes: [UInt8], message: String) {
        #expect {
            try IdempotencyRecord.decode(bytes)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test func truncatedCompletedRecordIsRefusedAtEveryLength() {
        let full = Self.records[2].encoded()
        for length in 0..<full.count {
            #expect(throws: IdempotencyRecord.Malformed.self) { try IdempotencyRecord.decode(Array(full[0..<length])) }
        }
    }
}

extension IdempotencyRecord: CustomTestStringConvertible {
    public var testDescription: String { "\(state)" }
}
