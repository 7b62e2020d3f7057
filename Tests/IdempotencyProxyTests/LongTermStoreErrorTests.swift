import Testing
import IdempotencyCore

@testable import IdempotencyProxy

/// What each PostgreSQL failure means to the request machine, the connection and the
/// operator.
@Suite struct LongTermStoreErrorTests {
    struct Row: Sendable, CustomTestStringConvertible {
        let error: LongTermStoreError
        let failure: ProtectedRequestMachine.StoreFailure
        let brokeConnection: Bool
        let isMisconfiguration: Bool
        var testDescription: String { error.description }
    }

    static func server(_ sqlState: String) -> LongTermStoreError { .server(sqlState: sqlState, message: "m") }

    @Test(arguments: [
        Row(error: .unavailable("connection refused"), failure: .unavailable, brokeConnection: true, isMisconfiguration: false),
        Row(error: .timeout, failure: .timedOut, brokeConnection: true, isMisconfiguration: false),
        Row(error: server("57P01"), failure: .unavailable, brokeConnection: true, isMisconfiguration: false),
        Row(error: server("57P03"), failure: .unavailable, brokeConnection: true, isMisconfiguration: false),
        Row(error: server("53300"), failure: .unavailable, brokeConnection: false, isMisconfiguration: false),
        Row(error: server("40P01"), failure: .unavailable, brokeConnection: false, isMisconfiguration: false),
        Row(error: server("40001"), failure: .unavailable, brokeConnection: false, isMisconfiguration: false),
        Row(error: server("28P01"), failure: .refused, brokeConnection: true, isMisconfiguration: true),
        Row(error: server("3D000"), failure: .refused, brokeConnection: false, isMisconfiguration: true),
        Row(error: server("23505"), failure: .refused, brokeConnection: false, isMisconfiguration: false),
        Row(error: .malformedRecord("short"), failure: .unreadable, brokeConnection: false, isMisconfiguration: false),
        Row(error: .unanswered("connection reset"), failure: .interrupted, brokeConnection: true, isMisconfiguration: false),
        Row(error: .lateClaim, failure: .refused, brokeConnection: false, isMisconfiguration: false),
        Row(error: .unusableTable("no column"), failure: .refused, brokeConnection: false, isMisconfiguration: true),
    ])
    func classification(_ row: Row) {
        #expect(row.error.failure == row.failure)
        #expect(row.error.brokeConnection == row.brokeConnection)
        #expect(row.error.isMisconfiguration == row.isMisconfiguration)
    }
}
