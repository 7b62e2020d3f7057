import Foundation
import IdempotencyCore

/// What routes cost a request, measured apart from I/O: looking a request's policy up in a
/// table of a dozen routes whose last one matches, and reading a webhook's key from its JSON
/// body with `JSONPointer.key(in:)` (which stops at the value) against Foundation's
/// `JSONSerialization` (which builds the whole body first).
/// `swift run -c release routes-bench [ITERATIONS]`; docs/performance.md has a run.
@main
enum RoutesBench {
    /// A Stripe-style event of about 2 KiB whose key is nested: `/data/object/id`.
    static let body: [UInt8] = {
        let metadata = (0..<20).map { "\"field_\($0)\":\"value number \($0) with some text\"" }.joined(separator: ",")
        let lines = (0..<8).map { "{\"id\":\"li_\($0)\",\"amount\":\($0 * 100),\"tax_rates\":[1,2,3],\"period\":{\"start\":1,\"end\":2}}" }
            .joined(separator: ",")
        let json = """
            {"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","api_version":"2022-11-15","created":1686089970,
            "data":{"object":{"id":"pi_3NG8Du2eZvKYlo2C0VJZk4Qw","object":"payment_intent","amount":2000,
            "metadata":{\(metadata)},"lines":[\(lines)],"status":"succeeded"}},
            "livemode":false,"pending_webhooks":1,"request":{"id":"req_1","idempotency_key":"k"},"type":"payment_intent.succeeded"}
            """
        return Array(json.utf8)
    }()

    static func main() throws {
        let iterations = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 100_000
        let pointer = try JSONPointer(parsing: "/data/object/id")
        let data = Data(body)
        let expected = "pi_3NG8Du2eZvKYlo2C0VJZk4Qw"

        let ours = measure(iterations) {
            body.withUnsafeBytes { pointer.key(in: $0) } == expected
        }
        let foundation = measure(iterations) {
            guard let event = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let object = (event["data"] as? [String: Any])?["object"] as? [String: Any]
            else { return false }
            return object["id"] as? String == expected
        }
        var loader = ConfigLoader()
        let paths = ["/v1/customers/*", "/v1/invoices/*", "/v1/refunds", "/v1/payouts/*/cancel", "/v1/subscriptions/*",
            "/v1/prices", "/v1/products/*", "/v1/tokens", "/v1/transfers/*", "/oauth/token", "/uploads/*", "/v1/charges/*"]
        for (index, path) in paths.enumerated() { loader.applySet("route.r\(index).path=\(path)") }
        let routes = RouteTable(try loader.finish().get())
        let target = "/v1/charges/ch_1/capture?expand=balance"
        let lookup = measure(iterations * 10) { routes.policy(target: target, host: "api.example").route == "r11" }
        let none = RouteTable(ProxyConfiguration())
        let noRoutes = measure(iterations * 10) { none.policy(target: target, host: "api.example").route == "default" }

        print("policy lookup, 12 routes, the last matches: \(String(format: "%.0f", lookup)) ns; no routes: \(String(format: "%.1f", noRoutes)) ns")
        print("body: \(body.count) bytes, key at /data/object/id, \(iterations) iterations each")
        print(String(format: "JSONPointer.key(in:)      %8.0f ns per body", ours))
        print(String(format: "JSONSerialization + walk  %8.0f ns per body (%.1f×)", foundation, foundation / ours))
    }

    /// Nanoseconds per call, the best of three rounds.
    static func measure(_ iterations: Int, _ body: () -> Bool) -> Double {
        var best = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<iterations { precondition(body()) }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / Double(iterations))
        }
        return best
    }
}
