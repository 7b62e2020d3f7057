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

/// The TLS contexts of docs/behaviour.md, TLS, made once at start (never on an event loop: making one reads
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
        return RedisTLS(context: try context(c.redisTLS))
    }

    /// `https://` upstream: verified against `upstream_tls_ca_file` (or the system's trust
    /// store) and `upstream_tls_server_name` (or the URL's host), which is also sent as SNI
    /// (an address is verified against the certificate's, and sends no SNI). nil for http://.
    static func upstream(_ c: ProxyConfiguration) throws(Problem) -> UpstreamTLS? {
        guard c.upstream.tls else { return nil }
        let name = c.upstreamTLSServerName.isEmpty ? c.upstream.host : c.upstreamTLSServerName
        let isAddress = (try? SocketAddress(ipAddress: name, port: 0)) != nil
        let context = try context(c.upstreamTLS, verification: isAddress ? .fullVerification : .noHostnameVerification)
        return UpstreamTLS(context: context, serverName: isAddress ? nil : name)
    }

    /// HTTPS on `listen` (`tls_cert_file` and `tls_key_file`): TLS 1.2 or later, no client
    /// certificates. nil for plain HTTP.
    static func listener(_ c: ProxyConfiguration) throws(Problem) -> NIOSSLContext? {
        let files = c.listenerTLS
        guard !files.certificate.isEmpty else { return nil }
        let (chain, privateKey) = try identity(files)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: privateKey)
        tls.minimumTLSVersion = .tlsv12
        return try made(tls, identity: files, otherwise: files.certificateName)
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

    /// A client's context: the group's trust roots, and its client certificate if one is set.
    private static func context(
        _ files: ProxyConfiguration.TLSFiles, verification: CertificateVerification = .fullVerification
    ) throws(Problem) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = verification
        tls.minimumTLSVersion = .tlsv12
        if !files.ca.isEmpty {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(files.ca))
            } catch {
                throw Problem(key: files.caName, message: "\(files.ca) is not a PEM certificate bundle (\(error))")
            }
        }
        guard !files.certificate.isEmpty else { return try made(tls, otherwise: files.caName) }
        (tls.certificateChain, tls.privateKey) = try identity(files)
        return try made(tls, identity: files, otherwise: files.caName)
    }

    /// The group's certificate chain and private key, from PEM files.
    private static func identity(
        _ files: ProxyConfiguration.TLSFiles
    ) throws(Problem) -> ([NIOSSLCertificateSource], NIOSSLPrivateKeySource) {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(files.certificate)
        } catch {
            throw Problem(key: files.certificateName, message: "\(files.certificate) is not a PEM certificate (\(error))")
        }
        do {
            return (chain.map { .certificate($0) }, .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem)))
        } catch {
            throw Problem(key: files.keyName, message: "\(files.key) is not a PEM private key (\(error))")
        }
    }

    /// The context; with an `identity` loaded into it, a failure means its key is another's.
    private static func made(
        _ tls: TLSConfiguration, identity: ProxyConfiguration.TLSFiles? = nil, otherwise blame: String
    ) throws(Problem) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            guard let files = identity else { throw Problem(key: blame, message: "cannot make a TLS context (\(error))") }
            throw Problem(key: files.keyName, message: "\(files.key) is not the private key of \(files.certificate) (\(error))")
        }
    }
}
