import Testing

@testable import IdempotencyCore

@Suite struct OwnerTokensTests {
    @Test func tokensOfOneGeneratorNeverRepeat() {
        var tokens = OwnerTokens(prefix: 7)
        let drawn = (0..<10_000).map { _ in tokens.next() }
        #expect(Set(drawn).count == drawn.count)
        #expect(drawn.allSatisfy { $0.count == IdempotencyRecord.ownerLength })
    }

    @Test func generatorsWithOtherPrefixesNeverMeet() {
        var a = OwnerTokens(prefix: 1)
        var b = OwnerTokens(prefix: 2)
        let fromA = Set((0..<1_000).map { _ in a.next() })
        #expect((0..<1_000).allSatisfy { _ in !fromA.contains(b.next()) })
    }

    @Test func defaultPrefixesAreDrawnAtRandom() {
        var a = OwnerTokens()
        var b = OwnerTokens()
        #expect(a.next() != b.next())
    }
}
