import Foundation

/// A child process started with a clean signal mask (Foundation's `Process` passes on the
/// test thread's mask, in which SIGTERM can be blocked), with its output captured to files.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    /// Holds the output files; removed with the process.
    private let directory: URL
    private let stdoutPath: String
    private let stderrPath: String

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("child-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        directory = dir
        stdoutPath = dir.appendingPathComponent("stdout").path
        stderrPath = dir.appendingPathComponent("stderr").path

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGINT)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let env = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard status == 0 else { throw TestSupportError("posix_spawn \(executable) failed: \(status)") }
        self.pid = pid
    }

    /// Runs `command` to its end; anything but exit status 0 throws with what it printed.
    public static func run(_ command: [String], timeout: TimeInterval) throws {
        let child = try ChildProcess(command[0], Array(command.dropFirst()))
        guard let status = child.wait(timeout: timeout), status == 0 else {
            throw TestSupportError("\(command.joined(separator: " ")) failed: \(child.stderr)\(child.stdout)")
        }
    }

    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits for the exit status (polling, so it never blocks forever; at least once, so a
    /// timeout of 0 asks whether it has ended); nil on timeout.
    public func wait(timeout: TimeInterval = 20) -> Int32? {
        let end = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        repeat {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
            if timeout > 0 { usleep(20_000) }
        } while Date() < end
        return nil
    }

    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    deinit {
        if waitpid(pid, nil, WNOHANG) == 0 {
            kill(pid, SIGKILL)
            waitpid(pid, nil, 0)
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// A product built next to the running test bundle (`swift build --build-tests` builds them all).
    public static func builtProduct(_ name: String) -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent(name).path
    }
}
