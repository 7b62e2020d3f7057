/// Statements of one kind waiting for a PostgreSQL connection, sent together: the claims (or
/// completions) queued on a loop while its connections are busy go out as one statement, one
/// round trip and one commit, when a connection is free again (up to `maxBatch` of them); a lone
/// one goes out at once.
///
/// A batch never holds two items of one key (a statement cannot write a row twice, and two
/// claims of one key must meet one after the other): the second waits for the next batch. The
/// statements themselves write their rows in byte order (`COLLATE "C"`), which is what keeps
/// batches of two loops or two proxies from deadlocking; the batch comes sorted the same way.
/// Pure: the store sends.
struct GroupCommitQueue<Item> {
    /// Enough to carry a loop's share of a busy server's requests in one commit, few enough
    /// that a statement stays short. (Computed: a generic type stores no static.)
    static var maxBatch: Int { 64 }

    private var waiting: [(key: String, sequence: UInt64, item: Item)] = []

    var isEmpty: Bool { waiting.isEmpty }

    /// When the longest-waiting item was queued (in `append`'s sequence), to serve the kind
    /// that has waited longest first.
    var oldest: UInt64? { waiting.first?.sequence }

    mutating func append(key: String, sequence: UInt64, _ item: Item) {
        waiting.append((key, sequence, item))
    }

    /// The next batch: the longest-waiting items, one per key, at most `limit`, sorted by key.
    /// The queue is compacted in place: an item deferred for its key keeps its place in line.
    mutating func nextBatch(limit: Int = Self.maxBatch) -> [(key: String, item: Item)] {
        if waiting.count == 1 {
            let only = waiting.removeLast()
            return [(only.key, only.item)]
        }
        var batch: [(key: String, item: Item)] = []
        batch.reserveCapacity(min(limit, waiting.count))
        var keys = Set<String>(minimumCapacity: batch.capacity)
        // waiting[..<deferred] are the items put back; waiting[deferred..<taken] were taken.
        var deferred = 0
        var taken = 0
        while taken < waiting.count, batch.count < limit {
            if keys.insert(waiting[taken].key).inserted {
                batch.append((waiting[taken].key, waiting[taken].item))
            } else {
                waiting.swapAt(deferred, taken)
                deferred += 1
            }
            taken += 1
        }
        waiting.removeSubrange(deferred..<taken)
        batch.sort { $0.key < $1.key }
        return batch
    }
}
