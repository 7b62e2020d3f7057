import Testing

@testable import IdempotencyCore

@Suite struct RouteTests {
    private func matches(_ pattern: String, _ path: String) throws -> Bool {
        let parsed = try PathPattern(parsing: pattern)
        var path = path
        return path.withUTF8 { parsed.matches(UnsafeRawBufferPointer($0)) }
    }

    @Test(arguments: [
        ("/v1/charges", "/v1/charges", true),
        ("/v1/charges", "/v1/charges/", false),
        ("/v1/charges", "/v1/charges/ch_1", false),
        ("/v1/charges", "/v1/chargesX", false),
        ("/v1/charges", "/v1", false),
        ("/v1/charges", "/V1/charges", false),
        ("/v1/charges/*", "/v1/charges", true),
        ("/v1/charges/*", "/v1/charges/", true),
        ("/v1/charges/*", "/v1/charges/ch_1/refunds", true),
        ("/v1/charges/*", "/v1/chargesX", false),
        ("/v1/charges/*", "/v1", false),
        ("/v1/customers/*/charges", "/v1/customers/cus_1/charges", true),
        ("/v1/customers/*/charges", "/v1/customers//charges", false),
        ("/v1/customers/*/charges", "/v1/customers/a/b/charges", false),
        ("/v1/customers/*/charges", "/v1/customers/cus_1/charges/x", false),
        ("/v1/customers/*/charges/*", "/v1/customers/cus_1/charges/ch_1", true),
        // Matched as sent: an encoded slash is not a slash.
        ("/v1/customers/*/charges", "/v1/customers/a%2Fb/charges", true),
        ("/v1/files/a%2Fb", "/v1/files/a%2Fb", true),
        ("/v1/files/a%2Fb", "/v1/files/a/b", false),
        ("/", "/", true),
        ("/", "/x", false),
        ("/*", "/", true),
        ("/*", "/anything/at/all", true),
    ])
    func pathPatterns(pattern: String, path: String, matched: Bool) throws {
        #expect(try matches(pattern, path) == matched)
    }

    @Test(arguments: [
        ("v1/charges", "starts with /"),
        ("/v1/ch*", "whole segment"),
        ("/v1/*x/charges", "whole segment"),
        ("/v1/charges?x=1", "without the query"),
    ])
    func badPatterns(pattern: String, message: String) {
        #expect { try PathPattern(parsing: pattern) } throws: { "\($0)".contains(message) }
    }

    @Test(arguments: [
        ("api.example", "api.example", true),
        ("API.Example:8443", "api.example", true),
        ("api.example.evil", "api.example", false),
        ("[::1]:8080", "[::1]", true),
        ("127.0.0.1:80", "127.0.0.1", true),
    ])
    func hosts(sent: String, wanted: String, matched: Bool) {
        #expect(Route.host(sent, is: wanted) == matched)
    }

    private func table(_ text: String) throws -> RouteTable {
        var loader = ConfigLoader()
        loader.applyFile(named: "routes.conf", contents: text)
        return RouteTable(try loader.finish().get())
    }

    @Test func theFirstRouteThatTakesTheRequestDecides() throws {
        let routes = try table("""
            route.charges.path = /v1/charges/*
            route.charges.response_ttl = 7d
            route.admin.path = /v1/*
            route.admin.host = admin.example
            route.admin.protect = false
            route.all.path = /v1/*
            route.all.require_key = true
            """)
        #expect(routes.policy(target: "/v1/charges/ch_1?expand=x", host: nil).route == "charges")
        #expect(routes.policy(target: "/v1/charges/ch_1", host: nil).responseTTL == .seconds(7 * 86_400))
        #expect(routes.policy(target: "/v1/refunds", host: "Admin.Example:443").route == "admin")
        #expect(routes.policy(target: "/v1/refunds", host: "admin.example").protect == false)
        #expect(routes.policy(target: "/v1/refunds", host: "api.example").route == "all")
        #expect(routes.policy(target: "/v1/refunds", host: nil).requireKey)
        #expect(routes.policy(target: "/v2/refunds", host: nil).route == "default")
        #expect(routes.policy(target: "/v2/refunds", host: nil).responseTTL == .seconds(86_400))
        #expect(routes.policies.map(\.routeIndex) == [0, 1, 2, 3])
    }

    struct OverrideRow: Sendable, CustomTestStringConvertible {
        let field: String
        let value: String
        /// The route's policy has the value; the top level's does not.
        let applied: @Sendable (Policy) -> Bool
        var testDescription: String { "\(field) = \(value)" }
    }

    /// Every per-route field: the route's requests run with its value, the others with the top level's.
    @Test(arguments: [
        OverrideRow(field: "methods", value: "PUT", applied: { $0.methods == ["PUT"] }),
        OverrideRow(field: "require_key", value: "true", applied: { $0.requireKey }),
        OverrideRow(field: "key_header", value: "X-Request-Id", applied: { $0.keyHeader == "X-Request-Id" }),
        OverrideRow(field: "scope_headers", value: "X-Tenant", applied: { $0.scopeHeaders == ["X-Tenant"] }),
        OverrideRow(field: "fingerprint", value: "false", applied: { !$0.fingerprint }),
        OverrideRow(field: "lock_ttl", value: "2m", applied: { $0.lockTTL == .seconds(120) }),
        OverrideRow(field: "response_ttl", value: "7d", applied: { $0.responseTTL == .seconds(7 * 86_400) }),
        OverrideRow(field: "retention", value: "90d", applied: { $0.retention == .seconds(90 * 86_400) }),
        OverrideRow(field: "inflight_wait", value: "5s", applied: { $0.inflightWait == .seconds(5) }),
        OverrideRow(field: "store_5xx", value: "true", applied: { $0.releaseStatuses == .storing5xx }),
        OverrideRow(field: "release_statuses", value: "429", applied: { !$0.releaseStatuses.releases(503) && $0.releaseStatuses.releases(429) }),
        OverrideRow(field: "max_request_body", value: "10KiB", applied: { $0.maxRequestBody == 10_240 }),
        OverrideRow(field: "max_stored_response", value: "2MiB", applied: { $0.maxStoredResponse == 2 << 20 }),
        OverrideRow(field: "upstream_timeout", value: "5s", applied: { $0.upstreamTimeout == .seconds(5) }),
        OverrideRow(field: "protect", value: "false", applied: { !$0.protect }),
        OverrideRow(field: "key_from", value: "json:/id", applied: { $0.keyFromJSON?.description == "/id" }),
    ])
    func eachFieldAppliesToItsRouteOnly(_ row: OverrideRow) throws {
        let routes = try table("route.r.path = /r\nroute.r.\(row.field) = \(row.value)")
        #expect(row.applied(routes.policy(target: "/r", host: nil)))
        #expect(!row.applied(routes.policy(target: "/other", host: nil)))
    }

    @Test(arguments: [
        (#"{"id":"evt_1"}"#, "/id", "evt_1"),
        (#"  {"a":1, "id" : "evt_1" }"#, "/id", "evt_1"),
        (#"{"id":12345}"#, "/id", "12345"),
        (#"{"id":-7}"#, "/id", "-7"),
        (#"{"id":0}"#, "/id", "0"),
        (#"{"data":{"object":{"id":"pi_1"}}}"#, "/data/object/id", "pi_1"),
        (#"{"a":[{"x":1},{"id":"second"}]}"#, "/a/1/id", "second"),
        (#"{"a/b":"slash","m~n":"tilde"}"#, "/a~1b", "slash"),
        (#"{"a/b":"slash","m~n":"tilde"}"#, "/m~0n", "tilde"),
        (#"{"\u0069d":"escaped name"}"#, "/id", "escaped name"),
        (#"{"id":"quote \" back \\ uni \u00e9 pair \ud83d\ude00"}"#, "/id", "quote \" back \\ uni é pair 😀"),
        (#"{"skip":{"deep":[[[{"id":"no"}]]],"s":"}]\"["},"id":"yes"}"#, "/id", "yes"),
        (#"{"id":"first","id":"second"}"#, "/id", "first"),
        (#""top""#, "", "top"),
    ])
    func jsonPointerFindsTheKey(body: String, pointer: String, key: String) throws {
        let parsed = try JSONPointer(parsing: pointer)
        var body = body
        #expect(body.withUTF8 { parsed.key(in: UnsafeRawBufferPointer($0)) } == key)
    }

    @Test(arguments: [
        ("not json", "/id"),
        ("", "/id"),
        (#"{"id":1.5}"#, "/id"),
        (#"{"id":1e3}"#, "/id"),
        (#"{"id":01}"#, "/id"),
        (#"{"id":true}"#, "/id"),
        (#"{"id":null}"#, "/id"),
        (#"{"id":{"x":1}}"#, "/id"),
        (#"{"other":"x"}"#, "/id"),
        (#"{"a":[1,2]}"#, "/a/2"),
        (#"{"a":[1,2]}"#, "/a/01"),
        (#"{"a":[1,2]}"#, "/a/-"),
        (#"{"id":"unterminated"#, "/id"),
        (#"{"id":"bad \x escape"}"#, "/id"),
        (#"{"id":"lone \ud83d surrogate"}"#, "/id"),
        (#"["id"]"#, "/id"),
    ])
    func jsonPointerFindsNothing(body: String, pointer: String) throws {
        let parsed = try JSONPointer(parsing: pointer)
        var body = body
        #expect(body.withUTF8 { parsed.key(in: UnsafeRawBufferPointer($0)) } == nil)
    }

    /// Nesting costs no stack: a body nested deeper than any recursion could go is skipped.
    @Test func deeplyNestedBodiesAreSkippedWithoutRecursion() throws {
        let depth = 1_000_000
        var body = #"{"skip":"# + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + #","id":"k"}"#
        let pointer = try JSONPointer(parsing: "/id")
        #expect(body.withUTF8 { pointer.key(in: UnsafeRawBufferPointer($0)) } == "k")
    }

    @Test(arguments: ["id", "/a~2", "/a~"])
    func badPointers(pointer: String) {
        #expect(throws: ConfigValueError.self) { try JSONPointer(parsing: pointer) }
    }
}
