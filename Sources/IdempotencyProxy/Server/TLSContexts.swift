import IdempotencyCore
import NIOCore
import NIOSSL
import RedisClient

/// TLS to an `https://` upstream: the context, and the name verified and sent as SNI.
struct UpstreamTLS: Sendable {
    let context: NIOSSLContext
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
        let context = try context(
            ca: (c.upstreamTLSCAFile, "upstream_tls_ca_file"), certificate: (c.upstreamTLSCertFile, "upstream_tls_cert_file"),
            key: (c.upstreamTLSKeyFile, "upstream_tls_key_file"))
        let name = c.upstreamTLSServerName.isEmpty ? c.upstream.host : c.upstreamTLSServerName
        let isAddress = (try? SocketAddress(ipAddress: name, port: 0)) != nil
        return UpstreamTLS(context: context, serverName: isAddress ? nil : name)
    }

    /// HTTPS on `listen` (`tls_cert_file` and `tls_key_file`): TLS 1.2 or later, no client
    /// certificates. nil for plain HTTP.
    static func listener(_ c: ProxyConfiguration) throws(Problem) -> NIOSSLContext? {
        guard !c.tlsCertFile.isEmpty else { return nil }
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(c.tlsCertFile)
        } catch {
            throw Problem(key: "tls_cert_file", message: "\(c.tlsCertFile) is not a PEM certificate (\(error))")
        }
        do {
            key = try NIOSSLPrivateKey(file: c.tlsKeyFile, format: .pem)
        } catch {
            throw Problem(key: "tls_key_file", message: "\(c.tlsKeyFile) is not a PEM private key (\(error))")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw Problem(key: "tls_key_file", message: "\(c.tlsKeyFile) is not the private key of \(c.tlsCertFile) (\(error))")
        }
    }

    /// Every TLS file of the configuration, loaded as the proxy would at start: unreadable
    /// files, files that are not PEM, and a key that does not belong to its certificate.
    public static func problems(_ c: ProxyConfiguration) -> [Problem] {
        var problems: [Problem] = []
        do { _ = try listener(c) } catch { problems.append(error) }
        do { _ = try redis(c) } catch { problems.append(error) }
        do { _ = try upstream(c) } catch { problems.append(error) }
        do { try postgresRootCertificates(c) } catch { problems.append(error) }
        return problems
    }

    private static func context(
        ca: (file: String, key: String), certificate: (file: String, key: String), key: (file: String, key: String)
    ) throws(Problem) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .fullVerification
        tls.minimumTLSVersion = .tlsv12
        if !ca.file.isEmpty {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca.file))
            } catch {
                throw Problem(key: ca.key, message: "\(ca.file) is not a PEM certificate bundle (\(error))")
            }
        }
        if !certificate.file.isEmpty {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate.file).map { .certificate($0) }
            } catch {
                throw Problem(key: certificate.key, message: "\(certificate.file) is not a PEM certificate (\(error))")
            }
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key.file, format: .pem))
            } catch {
                throw Problem(key: key.key, message: "\(key.file) is not a PEM private key (\(error))")
            }
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            guard !certificate.file.isEmpty else { throw Problem(key: ca.key, message: "cannot make a TLS context (\(error))") }
            throw Problem(key: key.key, message: "\(key.file) is not the private key of \(certificate.file) (\(error))")
        }
    }

    /// `sslrootcert` of `postgres_url`: the CA bundle PostgreSQL's certificate is verified
    /// against (the context itself is postgres-nio's, made by `PostgresWiring`).
    static func postgresRootCertificates(_ c: ProxyConfiguration) throws(Problem) {
        guard let file = c.postgresURL?.sslRootCert else { return }
        do {
            _ = try NIOSSLCertificate.fromPEMFile(file)
        } catch {
            throw Problem(key: "postgres_url", message: "sslrootcert \(file) is not a PEM certificate bundle (\(error))")
        }
    }
}
