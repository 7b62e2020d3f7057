import Foundation

/// A private PostgreSQL server (its own data directory, a free loopback port, password auth)
/// for tests that stop or pause their database, so they never disturb the shared one that
/// `scripts/test` starts. PostgreSQL refuses to run as root: as root, it runs as the
/// `postgres` system user. Durability is off: it only ever holds test data.
public final class PostgresServerProcess: @unchecked Sendable {
    public let port: Int
    public let password: String
    private let directory: String
    private let runAs: [String]
    private let tls: Bool

    /// `certificates`: the server speaks TLS with their server certificate and accepts only
    /// TLS connections (pg_hba `hostssl`), so a client that does not encrypt is refused.
    public init(certificates: TestCertificates? = nil) throws {
        let bin = Self.binDirectory
        directory = "/tmp/idemproxy-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        runAs = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []
        if getuid() == 0, let user = getpwnam("postgres") {
            chown(directory, user.pointee.pw_uid, user.pointee.pw_gid)
        }
        password = UUID().uuidString.replacingOccurrences(of: "-", with: "")
        let passwordFile = directory + "/pwfile"
        try password.write(toFile: passwordFile, atomically: true, encoding: .utf8)
        chmod(passwordFile, 0o644)
        try Self.run(runAs + [
            bin + "/initdb", "-D", directory + "/data", "-U", "postgres", "--auth=scram-sha-256",
            "--pwfile=" + passwordFile, "-E", "UTF8", "--no-sync",
        ])
        try? FileManager.default.removeItem(atPath: passwordFile)
        tls = certificates != nil
        if let certificates {
            let data = directory + "/data"
            try? FileManager.default.removeItem(atPath: data + "/server.crt")
            try FileManager.default.copyItem(atPath: certificates.serverCertFile, toPath: data + "/server.crt")
            try FileManager.default.copyItem(atPath: certificates.serverKeyFile, toPath: data + "/server.key")
            try "hostssl all all 127.0.0.1/32 scram-sha-256\nlocal all all trust\n".write(
                toFile: data + "/pg_hba.conf", atomically: true, encoding: .utf8)
            if getuid() == 0, let user = getpwnam("postgres") {
                for file in ["server.crt", "server.key", "pg_hba.conf"] {
                    chown(data + "/" + file, user.pointee.pw_uid, user.pointee.pw_gid)
                }
            }
            chmod(data + "/server.key", 0o600)
        }
        port = try FreePort.next()
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    public var url: String { "postgres://postgres:\(password)@127.0.0.1:\(port)/postgres" }

    /// The newest Debian PostgreSQL's programs (`PG_BIN` from scripts/test when set).
    public static var binDirectory: String {
        if let bin = ProcessInfo.processInfo.environment["PG_BIN"] { return bin }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        let newest = versions.compactMap(Int.init).max() ?? 15
        return "/usr/lib/postgresql/\(newest)/bin"
    }

    /// Starts (or restarts) the server on the same port and data.
    public func start() throws {
        var options =
            "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200"
        if tls { options += " -c ssl=on" }
        try Self.run(runAs + [
            Self.binDirectory + "/pg_ctl", "-D", directory + "/data", "-l", directory + "/postgres.log", "-w", "-t", "30",
            "-o", options, "start",
        ])
    }

    /// Stops it at once, as a crash would.
    public func stop() {
        try? Self.run(runAs + [Self.binDirectory + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"])
    }

    /// SIGSTOP to the server and every backend: connections stay open, nothing answers.
    public func pause() { signalAll(SIGSTOP) }
    public func resume() { signalAll(SIGCONT) }

    private func signalAll(_ signal: Int32) {
        guard let pidText = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
            let first = pidText.split(separator: "\n").first, let postmaster = pid_t(first)
        else { return }
        kill(postmaster, signal)
        for child in Self.children(of: postmaster) { kill(child, signal) }
    }

    private static func children(of parent: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            // pid (comm) state ppid ...
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == parent ? pid : nil
        }
    }

    private static func run(_ command: [String]) throws {
        try ChildProcess.run(command, timeout: 60)
    }
}

/// The PostgreSQL that `scripts/test` started (`POSTGRES_URL`), or one of our own when run without it.
public enum SharedPostgres {
    private static let fallback: PostgresServerProcess? = {
        guard ProcessInfo.processInfo.environment["POSTGRES_URL"] == nil else { return nil }
        guard let server = try? PostgresServerProcess() else { return nil }
        fallbackServer = server
        // A static is never deinitialised: stop the server when the test process exits.
        atexit { fallbackServer?.stop() }
        return server
    }()

    public static var url: String {
        ProcessInfo.processInfo.environment["POSTGRES_URL"] ?? fallback?.url ?? "postgres://postgres@127.0.0.1:5432/postgres"
    }
}

nonisolated(unsafe) private var fallbackServer: PostgresServerProcess?
