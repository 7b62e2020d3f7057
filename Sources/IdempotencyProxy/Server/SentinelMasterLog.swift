import Logging
import NIOConcurrencyHelpers
import RedisClient

/// Logs which Redis master the Sentinels named, once per process however many event loops
/// follow it: the first one, and each failover with the old and the new master.
final class SentinelMasterLog: Sendable {
    private let logged = NIOLockedValueBox<ClusterNode?>(nil)

    /// `new`: the master one loop now uses; logged when the process had not logged it last.
    func masterChanged(to new: ClusterNode, logger: Logger) {
        let before = logged.withLockedValue { last -> ClusterNode?? in
            guard last != new else { return .none }
            defer { last = new }
            return last
        }
        switch before {
        case .none: return
        case .some(.none): logger.info("Redis master found through the Sentinels", metadata: ["master": "\(new)"])
        case .some(.some(let old)):
            logger.warning(
                "Redis failover: the Sentinels moved the master; requests now go to the new one",
                metadata: ["old_master": "\(old)", "new_master": "\(new)"])
        }
    }
}
