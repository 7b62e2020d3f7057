import Testing

@testable import IdempotencyProxy

/// What each PostgreSQL failure means for the settlement's next try, the connection and the
/// operator.
@Suite struct LongTermStoreErrorTests {
    struct Row: Sendable, CustomTestStringConvertible {
        let error: LongTermStoreError
        let mayPass: Bool
        let brokeConnection: Bool
        let isMisconfiguration: Bool
        var testDescription: String { error.description }
    }

    static func server(_ sqlState: String) -> LongTermStoreError { .server(sqlState: sqlState, message: "m") }

    @Test(arguments: [
        Row(error: .unavailable("connection refused"), mayPass: true, brokeConnection: true, isMisconfiguration: false),
        Row(error: .timeout, mayPass: false, brokeConnection: true, isMisconfiguration: false),
        Row(error: server("57P01"), mayPass: true, brokeConnection: true, isMisconfiguration: false),
        Row(error: server("57P03"), mayPass: true, brokeConnection: true, isMisconfiguration: false),
        Row(error: server("53300"), mayPass: true, brokeConnection: false, isMisconfiguration: false),
        Row(error: server("28P01"), mayPass: false, brokeConnection: true, isMisconfiguration: true),
        Row(error: server("3D000"), mayPass: false, brokeConnection: false, isMisconfiguration: true),
        Row(error: server("23505"), mayPass: false, brokeConnection: false, isMisconfiguration: false),
        Row(error: .malformedRecord("short"), mayPass: false, brokeConnection: false, isMisconfiguration: false),
        Row(error: .unusableTable("no column"), mayPass: false, brokeConnection: false, isMisconfiguration: true),
    ])
    func classification(_ row: Row) {
        #expect(row.error.mayPass == row.mayPass)
        #expect(row.error.brokeConnection == row.brokeConnection)
        #expect(row.error.isMisconfiguration == row.isMisconfiguration)
    }
}
