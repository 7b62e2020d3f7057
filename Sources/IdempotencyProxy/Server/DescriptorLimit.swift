#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's limit on open descriptors (`RLIMIT_NOFILE`). Service managers often leave the
/// soft limit at 1024 with a far higher hard limit; each client connection costs one, or two
/// with its upstream connection, so the soft limit is raised to the hard one at start, as Go's
/// runtime does.
enum DescriptorLimit {
    /// Raises the soft limit to the hard one (capped, for a hard limit of "unlimited"); the
    /// limit in force afterwards and the one before.
    static func raise() -> (now: Int, before: Int) {
        var limit = rlimit()
        guard getrlimit(resourceNoFile, &limit) == 0 else { return (1_024, 1_024) }
        let before = Int(clamping: limit.rlim_cur)
        let wanted = min(limit.rlim_max, rlim_t(1 << 20))
        guard wanted > limit.rlim_cur else { return (before, before) }
        var raised = limit
        raised.rlim_cur = wanted
        guard setrlimit(resourceNoFile, &raised) == 0 else { return (before, before) }
        return (Int(clamping: wanted), before)
    }

    #if canImport(Glibc)
    private static let resourceNoFile = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resourceNoFile = RLIMIT_NOFILE
    #endif
}
