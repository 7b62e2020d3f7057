import Testing

@testable import IdempotencyProxy

/// Which waiting statements go out together (`GroupCommitQueue`), as rows: the keys queued in
/// order, and the batches taken one after the other.
@Suite struct GroupCommitQueueTests {
    struct Row: Sendable, CustomTestStringConvertible {
        let rule: String
        let queued: [String]
        var limit = 64
        let batches: [[String]]
        var testDescription: String { rule }
    }

    @Test(arguments: [
        Row(rule: "a lone item is a batch of its own", queued: ["a"], batches: [["a"]]),
        Row(rule: "a batch is sorted by key, whatever the order of arrival", queued: ["c", "a", "b"], batches: [["a", "b", "c"]]),
        Row(rule: "a second item of a key waits for the next batch", queued: ["a", "b", "a", "c"], batches: [["a", "b", "c"], ["a"]]),
        Row(rule: "three of one key go one per batch", queued: ["k", "k", "k"], batches: [["k"], ["k"], ["k"]]),
        Row(rule: "a batch holds at most the limit, the longest waiting first", queued: ["e", "d", "c", "b", "a"], limit: 3,
            batches: [["c", "d", "e"], ["a", "b"]]),
        Row(rule: "a deferred item keeps its place ahead of later ones", queued: ["a", "a", "b", "c"], limit: 2,
            batches: [["a", "b"], ["a", "c"]]),
        Row(rule: "ASCII keys sort by their bytes, as the statements write them (COLLATE \"C\")", queued: ["b", "B", "a", "_"],
            batches: [["B", "_", "a", "b"]]),
    ])
    func batches(_ row: Row) {
        var queue = GroupCommitQueue<Int>()
        for (index, key) in row.queued.enumerated() { queue.append(key: key, sequence: UInt64(index), index) }
        var taken: [[String]] = []
        while !queue.isEmpty { taken.append(queue.nextBatch(limit: row.limit).map(\.key)) }
        #expect(taken == row.batches)
    }

    /// The items travel with their keys: each key's items go out in the order they came.
    @Test func eachKeysItemsGoOutInTheOrderTheyCame() {
        var queue = GroupCommitQueue<Int>()
        for (index, key) in ["a", "b", "a", "c", "a"].enumerated() { queue.append(key: key, sequence: UInt64(index), index) }
        var taken: [[Int]] = []
        while !queue.isEmpty { taken.append(queue.nextBatch().map(\.item)) }
        #expect(taken == [[0, 1, 3], [2], [4]])
    }

    @Test func theOldestItemIsKnownForChoosingAKind() {
        var queue = GroupCommitQueue<Int>()
        #expect(queue.oldest == nil)
        queue.append(key: "a", sequence: 7, 0)
        queue.append(key: "a", sequence: 9, 1)
        #expect(queue.oldest == 7)
        _ = queue.nextBatch()
        #expect(queue.oldest == 9)
        #expect(queue.nextBatch().map(\.item) == [1])
        #expect(queue.isEmpty)
    }
}
