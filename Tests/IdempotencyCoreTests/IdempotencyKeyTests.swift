import Testing

@testable import IdempotencyCore

@Suite struct IdempotencyKeyTests {
    private func parse(_ values: [String], max: Int = 255) -> Result<String?, IdempotencyKey.Invalid> {
        Result { () throws(IdempotencyKey.Invalid) in
            try IdempotencyKey.parse(headerValues: values, headerName: "Idempotency-Key", maxLength: max)
        }
    }

    @Test(arguments: [
        ("\"abc-123\"", "abc-123"),
        ("abc-123", "abc-123"),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("  padded  ", "padded"),
        ("\"with space\"", "with space"),
        ("\"esc\\\"aped\"", "esc\"aped"),
        ("\"k\";p=1", "k"),
        ("token;x", "token;x"),
    ])
    func readsKey(header: String, key: String) {
        #expect(parse([header]) == .success(key))
    }

    @Test func noHeaderMeansNoKey() {
        #expect(parse([]) == .success(nil))
    }

    @Test(arguments: [
        (["\"\""], "empty"),
        ([""], "empty"),
        (["a", "b"], "2 Idempotency-Key headers"),
        (["a,b"], "holds a list"),
        (["\"unterminated"], "not a valid structured-field string"),
        (["k\u{1}ey"], "printable ASCII"),
        (["ключ"], "printable ASCII"),
        ([String(repeating: "k", count: 256)], "256 characters long; the limit is 255"),
    ])
    func refusesBadKey(values: [String], detailPart: String) {
        guard case .failure(let error) = parse(values) else {
            Issue.record("accepted \(values)")
            return
        }
        #expect(error.detail.contains(detailPart), "\(error.detail)")
    }

    @Test func keyOfExactlyMaxLengthIsAccepted() {
        let key = String(repeating: "k", count: 255)
        #expect(parse([key]) == .success(key))
        #expect(parse(["\"" + key + "\""]) == .success(key))
    }
}
