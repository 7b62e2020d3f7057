import IdempotencyCore
import Testing

@Suite struct CertificateNameTests {
    @Test(arguments: [
        ("api.example.com", ["api.example.com"], true),
        ("API.Example.com.", ["api.example.com"], true),
        ("api.example.com", ["other.example.com", "api.example.com."], true),
        ("api.example.com", ["*.example.com"], true),
        ("a.b.example.com", ["*.example.com"], false),
        ("example.com", ["*.example.com"], false),
        ("api.com", ["*.com"], false),
        ("api.example.com", ["api.example.org"], false),
        ("api.example.com", [], false),
        ("bogus.example", ["localhost"], false),
        ("", ["localhost"], false),
    ] as [(String, [String], Bool)])
    func covers(_ name: String, _ dnsNames: [String], _ expected: Bool) {
        #expect(CertificateName.covers(name, dnsNames: dnsNames) == expected)
    }
}
