import DemoUpstreamKit
import Foundation
import NIOConcurrencyHelpers
import NIOSSL
import TestSupport
import Testing

/// docs/behaviour.md, TLS for the upstream: an `https://` API (the demo upstream serving HTTPS with
/// certificates `openssl` made for the test), verified, pooled and kept alive.
@Suite struct UpstreamTLSTests {
    /// Runs `body` with a proxy in front of an HTTPS demo upstream: its certificate for
    /// 127.0.0.1 and localhost, or for another name; `serverNames` records the SNI of every
    /// handshake; `demandClientCertificate`: one the test's CA signed.
    private static func withHTTPSUpstream(
        _ certificates: TestCertificates, demandClientCertificate: Bool = false, wrongName: Bool = false,
        serverNames: NIOLockedValueBox<[String?]>? = nil, settings: [String: String],
        _ body: (ProxyHarness) async throws -> Void
    ) async throws {
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(wrongName ? certificates.wrongNameCertFile : certificates.serverCertFile)
                .map { .certificate($0) },
            privateKey: .privateKey(
                try NIOSSLPrivateKey(file: wrongName ? certificates.wrongNameKeyFile : certificates.serverKeyFile, format: .pem)))
        if let serverNames {
            tls.sslContextCallback = { values, promise in
                serverNames.withLockedValue { $0.append(values.serverHostname) }
                promise.succeed(.noChanges)
            }
        }
        if demandClientCertificate {
            tls.certificateVerification = .noHostnameVerification
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificates.caFile))
        }
        try await withDemoUpstream(tls: try NIOSSLContext(configuration: tls)) { upstream in
            try await withProxy(settings, upstream: upstream, upstreamURL: "https://127.0.0.1:\(upstream.port)", body)
        }
    }

    @Test func anHTTPSUpstreamIsVerifiedAndItsConnectionsKeptAlive() async throws {
        let certificates = try TestCertificates()
        try await Self.withHTTPSUpstream(certificates, settings: ["upstream_tls_ca_file": certificates.caFile]) { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(first.status == 201)
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
            #expect(try await h.send("GET", "/echo").status == 200)
            // One client connection after another: the upstream connections are reused, so
            // there is no handshake per request.
            for i in 0..<20 { #expect(try await h.send("POST", "/charges", key: "n-\(i)", body: "x").status == 201) }
            #expect(h.upstream.executions("/charges") == 21)
            #expect(h.upstream.snapshot().connections <= 4, "\(h.upstream.snapshot().connections) TLS connections for 22 requests")
        }
    }

    /// The certificate names only api.other.example (no address): reached at 127.0.0.1, it
    /// verifies only under that name, which goes out as SNI.
    @Test func theServerNameIsWhatIsVerifiedAndSentAsSNI() async throws {
        let certificates = try TestCertificates()
        let serverNames = NIOLockedValueBox<[String?]>([])
        let settings = ["upstream_tls_ca_file": certificates.caFile, "upstream_tls_server_name": "api.other.example"]
        try await Self.withHTTPSUpstream(certificates, wrongName: true, serverNames: serverNames, settings: settings) {
            (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
        }
        #expect(serverNames.withLockedValue { $0 } .allSatisfy { $0 == "api.other.example" })
        #expect(!serverNames.withLockedValue { $0 }.isEmpty)
    }

    /// An upstream that accepts the connection and never answers the handshake: the connect
    /// timeout ends it, as no connection.
    @Test func aStalledHandshakeIsNoConnection() async throws {
        let certificates = try TestCertificates()
        let (listener, port) = try LoopbackSocket.bound()
        defer { close(listener) }
        guard listen(listener, 16) == 0 else { throw TestSupportError("cannot listen") }
        let settings = ["upstream_tls_ca_file": certificates.caFile, "upstream_timeout": "1s"]
        try await withProxy(settings, upstreamURL: "https://127.0.0.1:\(port)") { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 502)
            #expect(try h.counter("idemproxy_upstream_tls_failures_total") == 1)
            #expect(try await h.recordCount() == 0, "released: nothing was sent")
        }
    }

    /// A failed handshake is no connection: nothing was sent, so the claim is released and a
    /// retry runs (and fails the same way) rather than getting 409. "address-matches-but-not-the-name":
    /// the certificate is for the connected address (127.0.0.1) and for localhost, but
    /// upstream_tls_server_name names another host.
    @Test(arguments: ["wrong-name", "wrong-name-for-server-name", "address-matches-but-not-the-name", "other-ca", "system"])
    func anUpstreamThatDoesNotVerifyIs502AndNothingIsSent(_ trust: String) async throws {
        let certificates = try TestCertificates()
        var settings = ["upstream_tls_ca_file": certificates.caFile]
        switch trust {
        case "wrong-name-for-server-name": settings["upstream_tls_server_name"] = "localhost"
        case "address-matches-but-not-the-name": settings["upstream_tls_server_name"] = "bogus.example"
        case "other-ca": settings["upstream_tls_ca_file"] = certificates.otherCAFile
        case "system": settings = [:]
        default: break
        }
        try await Self.withHTTPSUpstream(certificates, wrongName: trust.hasPrefix("wrong-name"), settings: settings) { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 502)
            #expect(r.isProblem)
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 502, "released, not 409")
            #expect(h.upstream.executions("/charges") == 0)
            #expect(try await h.send("GET", "/echo").status == 502, "passthrough too")
            #expect(try h.counter("idemproxy_upstream_tls_failures_total") >= 3)
        }
    }

    @Test func aClientCertificateForAnUpstreamThatDemandsOne() async throws {
        let certificates = try TestCertificates()
        let with = [
            "upstream_tls_ca_file": certificates.caFile, "upstream_tls_cert_file": certificates.clientCertFile,
            "upstream_tls_key_file": certificates.clientKeyFile,
        ]
        try await Self.withHTTPSUpstream(certificates, demandClientCertificate: true, settings: with) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 201)
        }
        try await Self.withHTTPSUpstream(
            certificates, demandClientCertificate: true, settings: ["upstream_tls_ca_file": certificates.caFile]
        ) { (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 502)
            #expect(h.upstream.executions("/charges") == 0)
        }
    }

    /// Debian's nginx with `ssl` as the upstream: one presenting the right certificate, one
    /// presenting a certificate for another name.
    @Test func nginxServingHTTPSAsTheUpstream() async throws {
        let certificates = try TestCertificates()
        let good = try NginxProcess(certificateFile: certificates.serverCertFile, keyFile: certificates.serverKeyFile)
        try await withProxy(["upstream_tls_ca_file": certificates.caFile], upstreamURL: "https://127.0.0.1:\(good.port)") { h in
            let first = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(first.status == 201)
            #expect(first.text.contains("nginx"))
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").replayed)
        }
        let wrong = try NginxProcess(certificateFile: certificates.wrongNameCertFile, keyFile: certificates.wrongNameKeyFile)
        try await withProxy(["upstream_tls_ca_file": certificates.caFile], upstreamURL: "https://127.0.0.1:\(wrong.port)") {
            (h: ProxyHarness) async throws in
            #expect(try await h.send("POST", "/charges", key: "k", body: "x").status == 502)
            #expect(try h.counter("idemproxy_upstream_tls_failures_total") == 1)
        }
    }
}
