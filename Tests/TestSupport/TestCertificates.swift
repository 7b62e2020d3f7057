import Foundation
import NIOSSL

/// Certificates made by `openssl` for a test, never committed: a CA, a server certificate it
/// signed for `127.0.0.1` and `localhost` (also good as a client's, as Redis Cluster nodes use
/// it on their bus), a client certificate it signed, and a second CA that signed nothing the
/// servers present; and a certificate for another name.
public final class TestCertificates: @unchecked Sendable {
    public let directory: String

    public var caFile: String { directory + "/ca.pem" }
    public var otherCAFile: String { directory + "/other-ca.pem" }
    public var serverCertFile: String { directory + "/server.pem" }
    public var serverKeyFile: String { directory + "/server.key" }
    /// Signed by the CA for `api.other.example` only: a server presenting the wrong name.
    public var wrongNameCertFile: String { directory + "/wrong-name.pem" }
    public var wrongNameKeyFile: String { directory + "/wrong-name.key" }
    public var clientCertFile: String { directory + "/client.pem" }
    public var clientKeyFile: String { directory + "/client.key" }

    /// A client's context that trusts `caFile` (this test's CA, or `otherCAFile`).
    public func clientContext(trusting caFile: String) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        return try NIOSSLContext(configuration: tls)
    }

    /// The set made once for the whole test process: making one runs `openssl` eight times
    /// (five RSA keys), which blocks a thread of Swift's cooperative pool, and two dozen tests
    /// each making their own at the suite's start left every other test without a thread for
    /// seconds. The files are only read (a test that writes a file of its own there gives it a
    /// name of its own); they are removed when the process exits.
    public init() throws {
        directory = try Self.shared.get()
    }

    private static let shared: Result<String, any Error> = Result {
        try FileManager.default.createDirectory(atPath: sharedDirectory, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: TestCertificates.sharedDirectory) }
        let maker = Maker(directory: sharedDirectory)
        try maker.makeCA("ca", subject: "/CN=idemproxy test CA")
        try maker.makeCA("other-ca", subject: "/CN=another CA")
        try maker.makeSigned("server", subject: "/CN=localhost", extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth")
        try maker.makeSigned("wrong-name", subject: "/CN=api.other.example", extensions: "subjectAltName=DNS:api.other.example\nextendedKeyUsage=serverAuth")
        try maker.makeSigned("client", subject: "/CN=idemproxy client", extensions: "extendedKeyUsage=clientAuth")
        return sharedDirectory
    }

    private static let sharedDirectory = "/tmp/idemproxy-certs-\(UUID().uuidString.prefix(8))"

    private struct Maker {
        let directory: String
        var caFile: String { directory + "/ca.pem" }

        func makeCA(_ name: String, subject: String) throws {
            try openssl([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
                "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).pem",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])
        }

        func makeSigned(_ name: String, subject: String, extensions: String) throws {
            let ext = "\(directory)/\(name).ext"
            try extensions.write(toFile: ext, atomically: true, encoding: .utf8)
            try openssl([
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", "\(directory)/\(name).key",
                "-out", "\(directory)/\(name).csr",
            ])
            try openssl([
                "x509", "-req", "-in", "\(directory)/\(name).csr", "-CA", caFile, "-CAkey", "\(directory)/ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", "\(directory)/\(name).pem",
            ])
        }

        func openssl(_ arguments: [String]) throws {
            try ChildProcess.run(["/usr/bin/openssl"] + arguments, timeout: 30)
        }
    }
}
