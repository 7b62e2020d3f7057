import IdempotencyCore
import NIOCore
import NIOSSL
import PostgresNIO
import RedisClient

/// TLS to an `https://` upstream: the context, and the name verified and sent as SNI (nil
/// for an address, which swift-nio-ssl verifies against the certificate's addresses).
struct UpstreamTLS: Sendable {
    let context: NIOSSLContext
    /// Verified by `UpstreamHandshake` against the certificate's DNS names only: the context
    /// checks the chain but not the name, since swift-nio-ssl would also take a certificate
    /// for the connected address whatever the name.
    let serverName: String?
}

/// The TLS contexts of SPEC §9, made once at start (never on an event loop: making one reads
/// files), and the certificate checks `--check` runs.
public enum TLSContexts {
    /// Why a set of TLS files cannot be used, naming the configuration key to blame.
    public struct Problem: Error, CustomStringConvertible {
        public let key: String
        public let message: String
        public var description: String { "\(key): \(message)" }
    }

    /// `rediss://`: verified against `redis_tls_ca_file` (or the system's trust store), with
    /// the client certificate when one is set. nil for plain Redis.
    static func redis(_ c: ProxyConfiguration) throws(Problem) -> RedisTLS? {
        guard c.redisURL.tls else { return nil }
        let context = try context(
            ca: (c.redisTLSCAFile, "redis_tls_ca_file"), certificate: (c.redisTLSCertFile, "redis_tls_cert_file"),
            key: (c.redisTLSKeyFile, "redis_tls_key_file"))
        return RedisTLS(context: context)
    }

    /// `https://` upstream: verified against `upstream_tls_ca_file` (or the system's trust
    /// store) and `upstream_tls_server_name` (or the URL's host), which is also sent as SNI
    /// (an address is verified against the certificate's, and sends no SNI). nil for http://.
    static func upstream(_ c: ProxyConfiguration) throws(Problem) -> UpstreamTLS? {
        guard c.upstream.tls else { return nil }
        let name = c.upstreamTLSServerName.isEmpty ? c.upstream.host : c.upstreamTLSServerName
        let isAddress = (try? SocketAddress(ipAddress: name, port: 0)) != nil
        let context = try context(
            ca: (c.upstreamTLSCAFile, "upstream_tls_ca_file"), certificate: (c.upstreamTLSCertFile, "upstream_tls_cert_file"),
            key: (c.upstreamTLSKeyFile, "upstream_tls_key_file"), verification: isAddress ? .fullVerification : .noHostnameVerification)
        return UpstreamTLS(context: context, serverName: isAddress ? nil : name)
    }

    /// HTTPS on `listen` (`tls_cert_file` and `tls_key_file`): TLS 1.2 or later, no client
    /// certificates. nil for plain HTTP.
    static func listener(_ c: ProxyConfiguration) throws(Problem) -> NIOSSLContext? {
        guard !c.tlsCertFile.isEmpty else { return nil }
        let certificate = (file: c.tlsCertFile, key: "tls_cert_file"), key = (file: c.tlsKeyFile, key: "tls_key_file")
        let (chain, privateKey) = try identity(certificate: certificate, key: key)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: privateKey)
        tls.minimumTLSVersion = .tlsv12
        return try made(tls, certificate: certificate, key: key, otherwise: "tls_cert_file")
    }

    /// PostgreSQL's `sslmode` (and `sslrootcert`) in `postgres_url`; `.disable` without one.
    static func postgres(_ c: ProxyConfiguration) throws(Problem) -> PostgresConnection.Configuration.TLS {
        guard let url = c.postgresURL, url.sslMode != .disable else { return .disable }
        var tls = TLSConfiguration.makeClientConfiguration()
        if url.sslMode == .require {
            tls.certificateVerification = .none
        } else if let file = url.sslRootCert {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(file))
            } catch {
                throw Problem(key: "postgres_url", message: "sslrootcert \(file) is not a PEM certificate bundle (\(error))")
            }
        }
        return .require(try made(tls, otherwise: "postgres_url"))
    }

    /// Every TLS file of the configuration, loaded as the proxy would at start: unreadable
    /// files, files that are not PEM, and a key that does not belong to its certificate.
    public static func problems(_ c: ProxyConfiguration) -> [Problem] {
        var problems: [Problem] = []
        do { _ = try listener(c) } catch { problems.append(error) }
        do { _ = try redis(c) } catch { problems.append(error) }
        do { _ = try upstream(c) } catch { problems.append(error) }
        do { _ = try postgres(c) } catch { problems.append(error) }
        return problems
    }

    private static func context(
        ca: (file: String, key: String), certificate: (file: String, key: String), key: (file: String, key: String),
        verification: CertificateVerification = .fullVerification
    ) throws(Problem) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = verification
        tls.minimumTLSVersion = .tlsv12
        if !ca.file.isEmpty {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca.file))
            } catch {
                throw Problem(key: ca.key, message: "\(ca.file) is not a PEM certificate bundle (\(error))")
            }
        }
        if !certificate.file.isEmpty {
            (tls.certificateChain, tls.privateKey) = try identity(certificate: certificate, key: key)
            return try made(tls, certificate: certificate, key: key, otherwise: ca.key)
        }
        return try made(tls, otherwise: ca.key)
    }

    /// A certificate chain and its private key, from PEM files.
    private static func identity(
        certificate: (file: String, key: String), key: (file: String, key: String)
    ) throws(Problem) -> ([NIOSSLCertificateSource], NIOSSLPrivateKeySource) {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificate.file)
        } catch {
            throw Problem(key: certificate.key, message: "\(certificate.file) is not a PEM certificate (\(error))")
        }
        do {
            return (chain.map { .certificate($0) }, .privateKey(try NIOSSLPrivateKey(file: key.file, format: .pem)))
        } catch {
            throw Problem(key: key.key, message: "\(key.file) is not a PEM private key (\(error))")
        }
    }

    /// The context; with a certificate, a failure means its key is another's.
    private static func made(
        _ tls: TLSConfiguration, certificate: (file: String, key: String)? = nil, key: (file: String, key: String)? = nil,
        otherwise blame: String
    ) throws(Problem) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            guard let certificate, let key else { throw Problem(key: blame, message: "cannot make a TLS context (\(error))") }
            throw Problem(key: key.key, message: "\(key.file) is not the private key of \(certificate.file) (\(error))")
        }
    }
}
