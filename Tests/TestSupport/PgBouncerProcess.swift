import Foundation

/// Debian's PgBouncer in front of a test PostgreSQL, as production stacks reach it: transaction
/// pooling and otherwise its default settings (an empty `ignore_startup_parameters`, no
/// prepared-statement support). It refuses to run as root, so as root it runs as the
/// `postgres` system user; clients log in with SCRAM against an auth file for the test role.
public final class PgBouncerProcess: @unchecked Sendable {
    public let port: Int
    private let directory: String
    private let user: String
    private let password: String
    private let database: String
    private var process: ChildProcess?

    /// `postgresURL`: `postgres://user:password@127.0.0.1:PORT/db` of the server behind it.
    public init(inFrontOf postgresURL: String) throws {
        guard let components = URLComponents(string: postgresURL), let user = components.user, let password = components.password,
            let serverPort = components.port
        else { throw TestSupportError("PgBouncer needs a postgres://user:password@host:port/db URL, got \(postgresURL)") }
        self.user = user
        self.password = password
        database = String(components.path.dropFirst())
        directory = "/tmp/idemproxy-pgbouncer-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = try FreePort.next()
        let config = """
            [databases]
            * = host=127.0.0.1 port=\(serverPort)
            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = \(port)
            unix_socket_dir =
            auth_type = scram-sha-256
            auth_file = \(directory)/userlist.txt
            pool_mode = transaction
            max_client_conn = 2000
            logfile = \(directory)/pgbouncer.log
            """
        try config.write(toFile: directory + "/pgbouncer.ini", atomically: true, encoding: .utf8)
        try "\"\(user)\" \"\(password)\"\n".write(toFile: directory + "/userlist.txt", atomically: true, encoding: .utf8)
        if getuid() == 0, let owner = getpwnam("postgres") {
            for path in [directory, directory + "/pgbouncer.ini", directory + "/userlist.txt"] {
                chown(path, owner.pointee.pw_uid, owner.pointee.pw_gid)
            }
        }
        chmod(directory + "/userlist.txt", 0o600)
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    public var url: String { "postgres://\(user):\(password)@127.0.0.1:\(port)/\(database)" }

    public static var binary: String { ProcessInfo.processInfo.environment["PGBOUNCER_BIN"] ?? "/usr/sbin/pgbouncer" }

    /// Starts (or restarts) it on the same port.
    public func start() throws {
        let runAs = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []
        let command = runAs + [Self.binary, directory + "/pgbouncer.ini"]
        let child = try ChildProcess(command[0], Array(command.dropFirst()))
        process = child
        try FreePort.waitUntilListening(port: port) { child.wait(timeout: 0) == nil }
    }

    /// Kills it, as a crash or a restart by an operator would end every connection through it.
    public func stop() {
        guard let child = process else { return }
        // PgBouncer itself (under runuser, which cannot pass a SIGKILL on), then runuser.
        _ = try? ChildProcess.run(["/usr/bin/pkill", "-KILL", "-f", directory + "/pgbouncer.ini"], timeout: 10)
        child.signal(SIGKILL)
        _ = child.wait(timeout: 10)
        process = nil
    }

    /// Its log, for a failing test's message.
    public var log: String { (try? String(contentsOfFile: directory + "/pgbouncer.log", encoding: .utf8)) ?? "" }
}

/// The PgBouncer in front of `SharedPostgres` that `scripts/test` started (`PGBOUNCER_URL`), or
/// one of our own when run without it.
public enum SharedPgBouncer {
    private static let fallback: PgBouncerProcess? = {
        guard ProcessInfo.processInfo.environment["PGBOUNCER_URL"] == nil else { return nil }
        let server = try? PgBouncerProcess(inFrontOf: SharedPostgres.url)
        sharedPgBouncer = server
        atexit { sharedPgBouncer?.stop() }
        return server
    }()

    /// Its URL; nil when it could not start (the tests that need it fail saying so).
    public static var url: String? { ProcessInfo.processInfo.environment["PGBOUNCER_URL"] ?? fallback?.url }
}

nonisolated(unsafe) private var sharedPgBouncer: PgBouncerProcess?
