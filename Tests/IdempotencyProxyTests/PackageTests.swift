import Foundation
import IdempotencyCore
import TestSupport
import Testing

/// The Debian package `scripts/package` builds (README, "Installing it as a service"):
/// inspected with `dpkg-deb`, and, as root, installed, checked and removed again.
@Suite(.serialized) struct PackageTests {
    /// The package `scripts/test` built (`PACKAGE_DEB`), or one built now.
    static func package() async throws -> String {
        if let built = ProcessInfo.processInfo.environment["PACKAGE_DEB"] { return built }
        let run = try await runToEnd("/bin/bash", [ExecutableTests.repository.appendingPathComponent("scripts/package").path], timeout: 1_800)
        guard run.status == 0, let path = run.stdout.split(separator: "\n").last else {
            throw TestSupportError("scripts/package failed: \(run.stderr.suffix(2_000))")
        }
        return String(path)
    }

    /// A program's standard output; anything but exit 0 throws with what it printed.
    static func output(_ command: String, _ arguments: [String]) async throws -> String {
        let run = try await runToEnd(command, arguments, timeout: 120)
        guard run.status == 0 else { throw TestSupportError("\(command) \(arguments) failed (\(String(describing: run.status))): \(run.stderr)\(run.stdout)") }
        return run.stdout
    }

    @Test func thePackageHoldsTheStaticBinaryItsConfigurationAndItsUnit() async throws {
        let deb = try await Self.package()
        let fields = try await Self.output("/usr/bin/dpkg-deb", ["-f", deb, "Package", "Version", "Depends", "Maintainer", "Description"])
        #expect(fields.contains("Package: idemproxy\n"))
        #expect(fields.contains("Version: \(IdemproxyVersion.current)\n"))
        #expect(deb.hasSuffix("idemproxy_\(IdemproxyVersion.current)_\(try await Self.output("/usr/bin/dpkg", ["--print-architecture"]).trimmingCharacters(in: .whitespacesAndNewlines)).deb"))
        let depends = fields.split(separator: "\n").first { $0.hasPrefix("Depends: ") } ?? ""
        #expect(depends.contains("libhiredis"), "\(depends)")
        #expect(!depends.contains("libc6") && !depends.contains("swift"), "\(depends)")

        let files = try await Self.output("/usr/bin/dpkg-deb", ["-c", deb])
        for path in ["./usr/bin/idemproxy", "./etc/idemproxy/idemproxy.conf", "./lib/systemd/system/idemproxy.service"] {
            #expect(files.contains(" \(path)\n"), "\(path) missing from \(files)")
        }
        #expect(!files.contains("idemproxy-load") && !files.contains("demo-upstream"))
        let conffiles = try await Self.output("/usr/bin/dpkg-deb", ["--info", deb, "conffiles"])
        #expect(conffiles == "/etc/idemproxy/idemproxy.conf\n")

        let unpacked = FileManager.default.temporaryDirectory.appendingPathComponent("deb-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: unpacked) }
        _ = try await Self.output("/usr/bin/dpkg-deb", ["-x", deb, unpacked])
        let binary = unpacked + "/usr/bin/idemproxy"
        let libraries = try await Self.output("/usr/bin/ldd", [binary])
        #expect(!libraries.contains("libswift") && !libraries.contains("libFoundation"), "links Swift dynamically: \(libraries)")
        #expect(try await Self.output(binary, ["--version"]).contains(IdemproxyVersion.current))
        #expect(try await Self.output(binary, ["--config", unpacked + "/etc/idemproxy/idemproxy.conf", "--check"]).contains("listen = "))
        let unit = try String(contentsOfFile: unpacked + "/lib/systemd/system/idemproxy.service", encoding: .utf8)
        for line in ["User=idemproxy", "Restart=on-failure", "LimitNOFILE=65536", "NoNewPrivileges=yes", "ProtectSystem=strict"] {
            #expect(unit.contains("\n\(line)\n"), "\(line)")
        }
        #expect(unit.contains("ExecStartPre=/usr/bin/idemproxy --config /etc/idemproxy/idemproxy.conf --check\n"))
    }

    /// Installed as an operator would: the user exists, the unit verifies, removing keeps the
    /// configuration and purging takes it and the user. Only as root (as `scripts/test` runs in CI).
    @Test(.enabled(if: getuid() == 0, "installing a package needs root"))
    func theInstalledPackageRunsAsItsUserAndRemovesCleanly() async throws {
        let deb = try await Self.package()
        _ = try await Self.output("/usr/bin/dpkg", ["-i", deb])
        #expect(try await Self.output("/usr/bin/idemproxy", ["--version"]).contains(IdemproxyVersion.current))
        #expect(try await Self.output("/usr/bin/getent", ["passwd", "idemproxy"]).hasPrefix("idemproxy:"))
        #expect(try await Self.output("/usr/bin/idemproxy", ["--config", "/etc/idemproxy/idemproxy.conf", "--check"]).contains("listen = "))
        let verify = try await runToEnd("/usr/bin/systemd-analyze", ["verify", "/lib/systemd/system/idemproxy.service"], timeout: 60)
        #expect(verify.status == 0, "systemd-analyze verify: \(verify.stderr)\(verify.stdout)")

        _ = try await Self.output("/usr/bin/dpkg", ["-r", "idemproxy"])
        #expect(!FileManager.default.fileExists(atPath: "/usr/bin/idemproxy"))
        #expect(FileManager.default.fileExists(atPath: "/etc/idemproxy/idemproxy.conf"), "a conffile stays on remove")
        _ = try await Self.output("/usr/bin/dpkg", ["-P", "idemproxy"])
        #expect(!FileManager.default.fileExists(atPath: "/etc/idemproxy/idemproxy.conf"))
        #expect(try await runToEnd("/usr/bin/getent", ["passwd", "idemproxy"]).status == 2, "the user goes with the purge")
    }
}
