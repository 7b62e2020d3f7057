import IdempotencyCore
import NIOSSL
import RedisClient

/// The TLS client contexts of SPEC §9, made once at start (never on an event loop: making
/// one reads files), and the certificate checks `--check` runs.
public enum ClientTLS {
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

    /// Every TLS file of the configuration, loaded as the proxy would at start: unreadable
    /// files, files that are not PEM, and a key that does not belong to its certificate.
    public static func problems(_ c: ProxyConfiguration) -> [Problem] {
        do {
            _ = try redis(c)
            return []
        } catch {
            return [error]
        }
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
            throw Problem(key: key.key, message: "\(key.file) is not the private key of \(certificate.file) (\(error))")
        }
    }
}
