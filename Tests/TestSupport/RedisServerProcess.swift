import Foundation
import NIOCore

/// A private `redis-server` for tests that stop, pause or reconfigure their Redis, so they
/// never disturb the shared one that `scripts/test` starts.
public final class RedisServerProcess: @unchecked Sendable {
    public private(set) var port: Int
    public let unixSocket: String?
    public let directory: URL
    private let extraArguments: [String]
    private var process: Process?
    /// TLS on the port (no plain port): `rediss://`.
    private let tls: (certificates: TestCertificates, clientAuth: Bool)?

    /// Starts a server on a free port (and a unix socket when asked). `beforeStart` runs once
    /// the port is picked (a caller holding another port for the server frees it there).
    /// `tls`: the port speaks TLS only, with the certificates' server certificate; `clientAuth`:
    /// clients must present a certificate the certificates' CA signed.
    public init(
        unixSocket: Bool = false, arguments: [String] = [], tls: TestCertificates? = nil, clientAuth: Bool = false,
        beforeStart: () -> Void = {}
    ) throws {
        self.tls = tls.map { ($0, clientAuth) }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("idemproxy-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = try FreePort.next()
        self.unixSocket = unixSocket ? directory.appendingPathComponent("redis.sock").path : nil
        extraArguments = arguments
        beforeStart()
        // The port was free when picked; another test may bind it first (then try another).
        for attempt in 1... {
            do {
                try start()
                return
            } catch where attempt < 3 {
                port = try FreePort.next()
            }
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    public var url: String { "\(tls == nil ? "redis" : "rediss")://127.0.0.1:\(port)/0" }

    public static var binary: String {
        ProcessInfo.processInfo.environment["REDIS_SERVER_BIN"] ?? "/usr/bin/redis-server"
    }

    /// Starts (or restarts) the server on the same port.
    public func start() throws {
        var args = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", directory.path]
        if let (certificates, clientAuth) = tls {
            args[1] = "0"
            args += [
                "--tls-port", "\(port)", "--tls-cert-file", certificates.serverCertFile, "--tls-key-file",
                certificates.serverKeyFile, "--tls-ca-cert-file", certificates.caFile, "--tls-auth-clients",
                clientAuth ? "yes" : "no",
            ]
        }
        if let unixSocket { args += ["--unixsocket", unixSocket, "--unixsocketperm", "700"] }
        process = try Process.server(Self.binary, arguments: args + extraArguments, listeningOn: port)
    }

    public func stop() {
        process?.killNow()
        process = nil
    }

    public var processIdentifier: pid_t? { process?.processIdentifier }

    public func pause() { if let p = process { kill(p.processIdentifier, SIGSTOP) } }
    public func resume() { if let p = process { kill(p.processIdentifier, SIGCONT) } }
}

extension Process {
    /// Runs `executable` with `arguments` and its output dropped, once it listens on `port`. A
    /// server that cannot bind (a port taken meanwhile) exits at once: that throws at once.
    static func server(_ executable: String, arguments: [String], listeningOn port: Int) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try FreePort.waitUntilListening(port: port) { process.isRunning }
        return process
    }

    /// SIGKILL, not SIGTERM: a child spawned from a test thread inherits that thread's signal
    /// mask, in which SIGTERM may be blocked. A crash is what tests want anyway.
    func killNow() {
        guard isRunning else { return }
        kill(processIdentifier, SIGKILL)
        waitUntilExit()
    }
}

public enum FreePort {
    /// A port nothing listens on now (the kernel's pick for port 0).
    public static func next() throws -> Int {
        let (fd, port) = try LoopbackSocket.bound()
        close(fd)
        return port
    }

    /// `isRunning`: the server's process, so that one that died at start fails at once.
    public static func waitUntilListening(
        port: Int, timeout: TimeInterval = 10, isRunning: () -> Bool = { true }
    ) throws {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if canConnect(port: port) { return }
            guard isRunning() else { throw TestSupportError("the server for port \(port) exited at start") }
            usleep(20_000)
        }
        throw TestSupportError("nothing listens on port \(port)")
    }

    public static func canConnect(port: Int) -> Bool {
        guard let fd = LoopbackSocket.connect(port: port) else { return false }
        close(fd)
        return true
    }
}

/// A port on which nothing can listen while this lives: it is bound but not listening, so
/// connections to it are refused and no other test can take it.
public final class ClosedPort: @unchecked Sendable {
    public let port: Int
    private var fd: Int32

    public init() throws {
        (fd, port) = try LoopbackSocket.bound()
    }

    /// Frees the port, for a test that starts a server on it next.
    public func open() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    deinit { open() }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The pid of `SharedRedis`'s own server, for the exit handler (which cannot capture).
nonisolated(unsafe) private var fallbackPID: pid_t = 0

/// The Redis that `scripts/test` started (`REDIS_URL`), or one of our own when run without it.
public enum SharedRedis {
    private static let fallback: RedisServerProcess? = {
        guard ProcessInfo.processInfo.environment["REDIS_URL"] == nil else { return nil }
        guard let server = try? RedisServerProcess() else { return nil }
        // A static is never deinitialised: without this, every `swift test` run outside
        // scripts/test would leave its Redis running.
        fallbackPID = server.processIdentifier ?? 0
        atexit { if fallbackPID > 0 { kill(fallbackPID, SIGKILL) } }
        return server
    }()

    public static var url: String {
        ProcessInfo.processInfo.environment["REDIS_URL"] ?? fallback?.url ?? "redis://127.0.0.1:6379/0"
    }

    public static var port: Int {
        let url = Self.url
        let afterColon = url.split(separator: ":").last ?? ""
        return Int(afterColon.split(separator: "/").first ?? "") ?? 6379
    }
}
