import Testing

@testable import IdempotencyCore

@Suite struct RequestDigestTests {
    private func fingerprint(_ method: String, _ target: String, _ body: String) -> [UInt8] {
        Array(body.utf8).withUnsafeBytes { RequestDigest.fingerprint(method: method, target: target, body: $0) }
    }

    @Test func fingerprintIsSHA256Sized() {
        #expect(fingerprint("POST", "/a", "x").count == 32)
    }

    @Test(arguments: [
        ("POST", "/charges", "a=1", "PATCH", "/charges", "a=1"),
        ("POST", "/charges", "a=1", "POST", "/charges?x=1", "a=1"),
        ("POST", "/charges", "a=1", "POST", "/charges", "a=2"),
        ("POST", "/ab", "c", "POST", "/a", "bc"),
        ("POS", "T/a", "", "POST", "/a", ""),
    ])
    func differentRequestsHaveDifferentFingerprints(m1: String, t1: String, b1: String, m2: String, t2: String, b2: String) {
        #expect(fingerprint(m1, t1, b1) != fingerprint(m2, t2, b2))
    }

    @Test func sameRequestSameFingerprint() {
        #expect(fingerprint("POST", "/charges", "a=1") == fingerprint("POST", "/charges", "a=1"))
    }

    @Test func scopeSeparatesTenantsAndIgnoresHeaderNameCase() {
        let a = RequestDigest.scope(headerNames: ["Authorization"]) { _ in ["Bearer a"] }
        let b = RequestDigest.scope(headerNames: ["Authorization"]) { _ in ["Bearer b"] }
        let none = RequestDigest.scope(headerNames: ["Authorization"]) { _ in [] }
        let lower = RequestDigest.scope(headerNames: ["authorization"]) { _ in ["Bearer a"] }
        #expect(a != b)
        #expect(a != none)
        #expect(a == lower)
        let split1 = RequestDigest.scope(headerNames: ["A", "B"]) { $0 == "A" ? ["xy"] : ["z"] }
        let split2 = RequestDigest.scope(headerNames: ["A", "B"]) { $0 == "A" ? ["x"] : ["yz"] }
        #expect(split1 != split2)
    }

    @Test func recordKeyIsPrefixedHexAndHidesTheUserKey() {
        let scope = RequestDigest.scope(headerNames: []) { _ in [] }
        let key = RequestDigest.recordKey(prefix: "idem:", scope: scope, key: "user\r\nkey")
        #expect(key.hasPrefix("idem:"))
        #expect(key.count == 5 + 64)
        #expect(key.dropFirst(5).allSatisfy { "0123456789abcdef".contains($0) })
        #expect(key != RequestDigest.recordKey(prefix: "idem:", scope: scope, key: "other"))
    }

    /// Record keys and fingerprints are kept in Redis and PostgreSQL: a proxy of another
    /// version must compute the same ones. The expected values come from Python's hashlib over
    /// the same length-prefixed fields.
    @Test func digestsAreTheSameInEveryVersion() {
        let scope = RequestDigest.scope(headerNames: ["Authorization"]) { _ in ["Bearer sk_test_1"] }
        #expect(scope.withUnsafeBytes { RequestDigest.hex($0) } == "913b5bc2ff41ac82159862e79747432631be207c29c03f3ec72dfa5547422f7c")
        #expect(
            RequestDigest.recordKey(prefix: "idem:", scope: scope, key: "order-42")
                == "idem:0461f6331795b7208bbdac46bc506d342b63469b7cc8037bceadb40b57dcb41d")
        let fingerprint = Array(#"{"amount":100}"#.utf8).withUnsafeBytes {
            RequestDigest.fingerprint(method: "POST", target: "/charges?x=1", body: $0)
        }
        #expect(fingerprint.withUnsafeBytes { RequestDigest.hex($0) } == "9c8d7cb93c89101eb620e2cb2b47a735c1762634b76e41a2920d32de45a61f71")
    }
}
