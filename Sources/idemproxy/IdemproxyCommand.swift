import ArgumentParser
import IdempotencyCore
import IdempotencyProxy
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

@main
struct IdemproxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idemproxy",
        abstract: "A sidecar reverse proxy that makes a non-idempotent HTTP API safe to retry.",
        discussion: "Configuration precedence: --set > IDEMPROXY_<KEY> environment variables > --config file > defaults.",
        version: IdemproxyVersion.current
    )

    @Option(name: .long, help: "A key = value configuration file.")
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Override one configuration key; repeatable.", valueName: "KEY=VALUE"))
    var set: [String] = []

    @Flag(name: .long, help: "Validate the configuration, print it as key = value lines and exit.")
    var check = false

    func run() async throws {
        var loader = ConfigLoader()
        if let config {
            do {
                loader.applyFile(named: config, contents: try readFile(config))
            } catch {
                fail(["\(config): cannot read the configuration file: \(error)"])
            }
        }
        loader.applyEnvironment(currentEnvironment())
        for argument in set { loader.applySet(argument) }
        let configuration: ProxyConfiguration
        switch loader.finish() {
        case .failure(let findings): fail(findings.all.map(\.description))
        case .success(let c): configuration = c
        }
        // Certificate files are loaded as the proxy would load them (docs/behaviour.md, TLS).
        let tlsProblems = TLSContexts.problems(configuration)
        if !tlsProblems.isEmpty { fail(tlsProblems.map { "\(loader.location(of: $0.key)): \($0.description)" }) }
        if check {
            print(ConfigLoader.render(configuration))
            return
        }
        let level = Logger.Level(rawValue: configuration.logLevel.rawValue) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "idemproxy")
        let group = ServiceGroup(
            configuration: .init(
                services: [ProxyService(configuration: configuration, logger: logger)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch {
            logger.critical("idemproxy failed: \(error)")
            throw ExitCode(1)
        }
    }

    /// Exit status 2, nothing started (docs/behaviour.md §1).
    private func fail(_ messages: [String]) -> Never {
        for message in messages { printError(message + "\n") }
        Glibc.exit(2)
    }
}
