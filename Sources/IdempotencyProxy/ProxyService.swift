import IdempotencyCore
import Logging
import NIOCore
import ServiceLifecycle

/// Runs the proxy under swift-service-lifecycle: serve until SIGTERM/SIGINT, then drain.
public struct ProxyService: Service {
    private let configuration: ProxyConfiguration
    private let logger: Logger

    public init(configuration: ProxyConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let server = try await ProxyServer.start(configuration: configuration, logger: logger)
        // Returns on the shutdown signal; cancellation (a failing sibling service) also ends it.
        try? await gracefulShutdown()
        await server.shutdown(grace: .milliseconds(configuration.shutdownGraceMs))
    }
}
