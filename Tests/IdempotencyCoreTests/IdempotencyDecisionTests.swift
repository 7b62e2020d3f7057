import Testing

@testable import IdempotencyCore

/// SPEC §3 as a table: each row is one rule.
@Suite struct IdempotencyDecisionTests {
    static let mine = [UInt8](repeating: 1, count: 32)
    static let other = [UInt8](repeating: 2, count: 32)
    static let owner = [UInt8](repeating: 9, count: 16)
    static let response = StoredResponse(status: 201, headers: [("A", "b")], body: Array("ok".utf8))

    static func existing(_ fp: [UInt8], _ state: IdempotencyRecord.State) -> IdempotencyDecision.Claim {
        .existing(IdempotencyRecord(owner: owner, fingerprint: fp, state: state))
    }

    struct ClaimRow: Sendable, CustomTestStringConvertible {
        let rule: String
        let claim: IdempotencyDecision.Claim
        let action: IdempotencyDecision.ClaimAction
        var testDescription: String { rule }
    }

    @Test(arguments: [
        ClaimRow(rule: "rule 5: a free key is claimed and forwarded", claim: .claimed, action: .forward),
        ClaimRow(rule: "rule 6: same request, completed: replay", claim: existing(mine, .completed(response)), action: .replay(response)),
        ClaimRow(rule: "rule 7: same request in flight: conflict", claim: existing(mine, .inFlight), action: .inFlight),
        ClaimRow(rule: "rule 7: different request, completed: mismatch", claim: existing(other, .completed(response)), action: .mismatch),
        ClaimRow(rule: "rule 7: different request in flight: mismatch", claim: existing(other, .inFlight), action: .mismatch),
        ClaimRow(rule: "rule 9: same request, too large to replay", claim: existing(mine, .completedWithoutBody(status: 200)), action: .notReplayable),
        ClaimRow(rule: "rule 7: different request, tombstone: mismatch", claim: existing(other, .completedWithoutBody(status: 200)), action: .mismatch),
    ])
    func afterClaim(_ row: ClaimRow) {
        #expect(IdempotencyDecision.afterClaim(row.claim, fingerprint: Self.mine) == row.action)
    }

    struct SettleRow: Sendable, CustomTestStringConvertible {
        let rule: String
        let result: IdempotencyDecision.UpstreamResult
        let store5xx: Bool
        let settlement: IdempotencyDecision.Settlement
        var testDescription: String { rule }
    }

    @Test(arguments: [
        SettleRow(rule: "rule 5: a 2xx is stored", result: .response(status: 201, bodyLength: 10), store5xx: false, settlement: .store),
        SettleRow(rule: "rule 5: a 4xx is stored", result: .response(status: 404, bodyLength: 10), store5xx: false, settlement: .store),
        SettleRow(rule: "rule 8: a 5xx releases the claim", result: .response(status: 503, bodyLength: 10), store5xx: false, settlement: .release),
        SettleRow(rule: "rule 8: store_5xx stores a 5xx", result: .response(status: 500, bodyLength: 10), store5xx: true, settlement: .store),
        SettleRow(rule: "rule 8: no connection releases", result: .notConnected, store5xx: false, settlement: .release),
        SettleRow(rule: "rule 8: a timeout keeps the claim", result: .timedOut, store5xx: true, settlement: .keep),
        SettleRow(rule: "rule 8: a broken exchange keeps the claim", result: .broken, store5xx: false, settlement: .keep),
        SettleRow(rule: "rule 9: too large is stored without body", result: .response(status: 200, bodyLength: 101), store5xx: false, settlement: .storeWithoutBody),
        SettleRow(rule: "rule 9: exactly the limit is stored", result: .response(status: 200, bodyLength: 100), store5xx: false, settlement: .store),
        SettleRow(rule: "rule 8 before 9: a large 5xx is released", result: .response(status: 502, bodyLength: 500), store5xx: false, settlement: .release),
    ])
    func settle(_ row: SettleRow) {
        #expect(IdempotencyDecision.settle(row.result, store5xx: row.store5xx, maxStoredResponse: 100) == row.settlement)
    }
}
