import ArgumentParser
import DemoUpstreamKit
import IdempotencyCore
import NIOCore

@main
struct DemoUpstreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-upstream",
        abstract: "A deliberately non-idempotent payments API: every POST /charges creates a charge.",
        version: IdemproxyVersion.current)

    @Option(name: .long, help: "ADDR:PORT to listen on.")
    var listen = "127.0.0.1:8080"

    @Option(name: .long, help: "Delay before answering each charge, e.g. 20ms.")
    var latency = "0ms"

    func run() async throws {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
            throw ValidationError("--listen must be ADDR:PORT, got \(listen)")
        }
        let host = String(listen[..<colon].filter { $0 != "[" && $0 != "]" })
        guard let delay = parseMilliseconds(latency) else {
            throw ValidationError("--latency must be a duration such as 20ms or 1s, got \(latency)")
        }
        let server = try await DemoUpstream.start(host: host, port: port, latency: .milliseconds(delay))
        print("demo-upstream listening on \(server.localAddress)")
        try await server.wait()
    }

    private func parseMilliseconds(_ text: String) -> Int64? {
        if text.hasSuffix("ms") { return Int64(text.dropLast(2)) }
        if text.hasSuffix("s") { return Int64(text.dropLast()).map { $0 * 1_000 } }
        return Int64(text)
    }
}
