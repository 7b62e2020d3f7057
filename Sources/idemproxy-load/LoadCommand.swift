import ArgumentParser
import IdempotencyCore
import LoadKit
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

@main
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idemproxy-load",
        abstract: "Retrying load generator: proves exactly-once execution and measures latency.",
        discussion: "Exit status 1 on any duplicate execution, mismatched answer or unanswered key.",
        version: IdemproxyVersion.current)

    @Option(
        help: "Target URL of the protected endpoint, e.g. http://127.0.0.1:8081/charges. Repeat it for several proxies: a retry after a lost response goes to the next one.")
    var url: [String] = []

    @Option(help: "Number of keys (protected POSTs) to send.")
    var requests = 1_000

    @Option(help: "Concurrent clients.")
    var concurrency = 16

    @Option(name: .customLong("lose-rate"), help: "Probability that an attempt's response is lost (0…1).")
    var loseRate = 0.0

    @Option(name: .customLong("max-retries"), help: "Retries per key after the first attempt.")
    var maxRetries = 10

    @Option(name: .customLong("stats-url"), help: "The upstream's side-effect counter (demo-upstream's /stats).")
    var statsURL: String?

    @Option(name: .customLong("body-bytes"), help: "Size of each request body.")
    var bodyBytes = 64

    @Option(name: .customLong("ca-file"), help: "CA bundle (PEM) that verifies https:// targets; default: the system's trust store.")
    var caFile: String?

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    func validate() throws {
        guard !url.isEmpty else { throw ValidationError("--url is required") }
        for u in url where HTTPTarget(u) == nil { throw ValidationError("--url must be http://host:port/path or https://…, got \(u)") }
        if let statsURL, HTTPTarget(statsURL) == nil { throw ValidationError("--stats-url must be http://host:port/path or https://…") }
        guard requests > 0, concurrency > 0, maxRetries >= 0, bodyBytes >= 0 else {
            throw ValidationError("--requests and --concurrency must be positive, --max-retries and --body-bytes not negative")
        }
        guard (0...1).contains(loseRate) else { throw ValidationError("--lose-rate must be between 0 and 1") }
    }

    func run() async throws {
        var options = LoadOptions(target: HTTPTarget(url[0])!)
        options.moreTargets = url.dropFirst().compactMap(HTTPTarget.init)
        options.requests = requests
        options.concurrency = concurrency
        options.loseRate = loseRate
        options.maxRetries = maxRetries
        options.statsTarget = statsURL.flatMap(HTTPTarget.init)
        options.bodyBytes = bodyBytes
        options.progress = !json && isatty(STDOUT_FILENO) == 1
        if url.contains(where: { $0.hasPrefix("https://") }) || statsURL?.hasPrefix("https://") == true {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile {
                do {
                    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
                } catch {
                    throw ValidationError("--ca-file \(caFile): not a PEM certificate bundle (\(error))")
                }
            }
            options.tls = try NIOSSLContext(configuration: tls)
        }
        let report = try await LoadRunner(options: options).run(group: MultiThreadedEventLoopGroup.singleton)
        print(json ? report.json() : report.text(title: "idemproxy-load → \(url.joined(separator: ", "))"))
        if !report.passed { throw ExitCode(1) }
    }
}
