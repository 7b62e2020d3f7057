import Foundation
import TestSupport
import Testing

/// docs/behaviour.md, TLS for the long-term store: `sslmode` against a real PostgreSQL with `ssl = on` that
/// accepts only encrypted connections, with certificates `openssl` made for the test.
@Suite struct PostgresTLSTests {
    private static func url(_ postgres: PostgresServerProcess, _ parameters: String) -> String {
        postgres.url + "?" + parameters
    }

    /// `require` encrypts without verifying; `verify-full` accepts the server its CA vouches for.
    @Test(arguments: ["require", "verify-full"])
    func anEncryptedConnectionProtects(_ mode: String) async throws {
        let certificates = try TestCertificates()
        let postgres = try PostgresServerProcess(certificates: certificates)
        let parameters = mode == "require" ? "sslmode=require" : "sslmode=verify-full&sslrootcert=\(certificates.caFile)"
        try await withProxy(TestTable(url: Self.url(postgres, parameters)).settings()) { h in try await h.expectReplayedFromPostgres() }
    }

    @Test func aServerThatRequiresTLSRefusesDisableAtStart() async throws {
        let certificates = try TestCertificates()
        let postgres = try PostgresServerProcess(certificates: certificates)
        let table = TestTable(url: Self.url(postgres, "sslmode=disable"))
        await #expect {
            try await withProxy(table.settings()) { _ in }
        } throws: { error in
            "\(error)".contains("no encryption") || "\(error)".contains("pg_hba.conf")
        }
    }

    /// Never a silent downgrade: a certificate that does not verify is a failed connection.
    @Test(arguments: ["other-ca", "system"])
    func verifyFullRefusesAServerItCannotVerify(_ trust: String) async throws {
        let certificates = try TestCertificates()
        let postgres = try PostgresServerProcess(certificates: certificates)
        let parameters = trust == "system" ? "sslmode=verify-full" : "sslmode=verify-full&sslrootcert=\(certificates.otherCAFile)"
        let table = TestTable(url: Self.url(postgres, parameters))
        try await withProxy(table.settings(), waitUntilReady: false) { h in
            let r = try await h.send("POST", "/charges", key: "k", body: "x")
            #expect(r.status == 503)
            #expect(h.upstream.executions("/charges") == 0)
            let ready = try h.admin("/readyz")
            #expect(ready.status == 503)
            #expect(ready.text.contains("PostgreSQL"))
        }
    }
}
