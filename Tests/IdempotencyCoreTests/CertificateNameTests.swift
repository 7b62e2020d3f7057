import IdempotencyCore
import Testing

@Suite struct CertificateNameTests {
    @Test(arguments: [
        ("api.example.com", ["api.example.com"], true),
        ("API.Example.com.", ["api.example.com"], true),
        ("api.example.com", ["other.example.com", "api.example.com."], true),
        ("api.example.com", ["*.example.com"], true),
        ("api.example.com", ["*.EXAMPLE.com"], true),
        ("a.b.example.com", ["*.example.com"], false),
        ("example.com", ["*.example.com"], false),
        ("api.com", ["*.com"], false),
        ("xn--bcher-kva.example.com", ["*.example.com"], false),
        ("xn--bcher-kva.example.com", ["xn--bcher-kva.example.com"], true),
        ("api.example.com", ["api*.example.com", "*.*.com", "*.", "*"], false),
        ("api..example.com", ["api..example.com"], false),
        ("api.example.com", ["api..example.com", ".example.com"], false),
        // A Kelvin sign (U+212A) is not an ASCII k.
        ("bank.example", ["ban\u{212A}.example"], false),
        ("api.example.com", ["api.example.org"], false),
        ("api.example.com", [], false),
        ("bogus.example", ["localhost"], false),
        ("", ["localhost"], false),
    ] as [(String, [String], Bool)])
    func covers(_ name: String, _ dnsNames: [String], _ expected: Bool) {
        #expect(CertificateName.covers(name, dnsNames: dnsNames.map { Array($0.utf8) }) == expected)
    }
}
