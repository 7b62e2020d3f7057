import Testing

@testable import IdempotencyCore

@Suite struct AccessLogLineTests {
    @Test(arguments: [
        ("abc-123", "k=abc-123"),
        ("", "k=\"\""),
        ("two words", "k=\"two words\""),
        ("a=b", "k=\"a=b\""),
        ("say \"hi\"", "k=\"say \\\"hi\\\"\""),
        ("back\\slash", "k=\"back\\\\slash\""),
        // A key or path cannot end the line or start a field of its own.
        ("x\nmethod=GET status=200", "k=\"x\\nmethod=GET status=200\""),
        ("x\r\ny", "k=\"x\\r\\ny\""),
        ("tab\there", "k=\"tab\\there\""),
        ("bell\u{07}del\u{7F}", "k=\"bell\\x07del\\x7f\""),
        ("/caf\u{E9}", "k=\"/caf\\xc3\\xa9\""),
    ])
    func quotesAndEscapesWhatIsNotAPlainWord(value: String, logged: String) {
        var line = AccessLogLine()
        line.field("k", value)
        let bytes = line.finish()
        #expect(String(decoding: bytes, as: UTF8.self) == logged + "\n")
        #expect(bytes.filter { $0 == UInt8(ascii: "\n") }.count == 1)
    }

    @Test func numbersAndDurations() {
        var line = AccessLogLine()
        line.field("status", 201)
        line.field("zero", 0)
        line.field("negative", -42)
        line.milliseconds("upstream_ms", nanoseconds: 1_234_567)
        line.milliseconds("total_ms", nanoseconds: 999)
        line.milliseconds("long_ms", nanoseconds: 12_000_050_000)
        #expect(String(decoding: line.finish(), as: UTF8.self)
            == "status=201 zero=0 negative=-42 upstream_ms=1.234 total_ms=0.000 long_ms=12000.050\n")
    }
}
