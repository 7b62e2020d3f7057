import Testing

@testable import IdempotencyCore

@Suite struct ProblemTests {
    @Test func rendersRFC9457Members() {
        let json = String(decoding: Problem.mismatch.json, as: UTF8.self)
        #expect(json.hasPrefix("{\"type\":\"urn:idemproxy:problem:key-reused\",\"title\":\"Idempotency key reused\",\"status\":422,\"detail\":\""))
    }

    @Test func escapesDetail() {
        let p = Problem(status: 400, type: "t", title: "T", detail: "a \"quote\" \\ and\ncontrol \u{1}")
        #expect(String(decoding: p.json, as: UTF8.self).contains(#""detail":"a \"quote\" \\ and\ncontrol \u0001""#))
    }
}
