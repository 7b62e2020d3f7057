import PostgresNIO
import Testing

@testable import IdempotencyProxy

/// A batch's column as one array parameter (`PostgresArray`), byte for byte what postgres-nio's
/// own `PostgresData(array:)` sends for the same values, as rows.
@Suite struct PostgresArrayTests {
    @Test(arguments: [[], [""], ["k"], ["idem:abc", "idem:äöü", "x"]])
    func text(_ values: [String]) {
        expectSame(PostgresArray.text(values), PostgresData(array: values.map { PostgresData(string: $0) }, elementType: .text))
    }

    @Test(arguments: [[], [[]], [[0]], [[1, 2, 3], [], Array(repeating: 255, count: 300)]] as [[[UInt8]]])
    func bytea(_ values: [[UInt8]]) {
        expectSame(PostgresArray.bytea(values), PostgresData(array: values.map { PostgresData(bytes: $0) }, elementType: .bytea))
    }

    @Test(arguments: [[], [0], [1, -1, .max, .min]] as [[Int64]])
    func int8(_ values: [Int64]) {
        expectSame(PostgresArray.int8(values), PostgresData(array: values.map { PostgresData(int64: $0) }, elementType: .int8))
    }

    private func expectSame(_ ours: PostgresData, _ theirs: PostgresData) {
        #expect(ours.type == theirs.type)
        #expect(ours.formatCode == theirs.formatCode)
        #expect(ours.value == theirs.value)
    }
}
