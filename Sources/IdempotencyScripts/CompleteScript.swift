import RedisClient

extension RedisScript {
    /// Stores the outcome of a claimed request, only if the claim is still ours (docs/behaviour.md §3, rule 5).
    ///
    /// A proxy whose lease ran out and was taken over must never overwrite the new owner's
    /// record. If the claim expired and nobody took the key, the outcome is stored anyway: the
    /// request did run, and a retry must get its answer rather than run it again. A key gone
    /// before our lock could have ended was removed on purpose (a forced delete, and a retry
    /// that took the key and gave it back) or lost with Redis's data: nothing is stored then, so
    /// that a deleted record does not come back.
    ///
    /// KEYS[1]  record key
    /// ARGV[1]  our owner token (16 bytes; record bytes 3–18 in Lua's 1-based indexing)
    /// ARGV[2]  completed record
    /// ARGV[3]  response_ttl in milliseconds
    /// ARGV[4]  PUBLISH or SPUBLISH (a cluster's shard channel): publish "done" on the channel
    ///          named KEYS[1] to wake waiting retries; `none` (`CompletionWakeUp.nobody`): no
    ///          message (only proxies with inflight_wait > 0 ask for one: a PUBLISH per
    ///          completion cost Redis about 5 µs of its ~35 µs per first-time request here). Best effort (`pcall`): a refused
    ///          message (SPUBLISH before Redis 7) must not undo the store; waiters also poll.
    /// ARGV[5]  the latest our claim's lock can end, in milliseconds since the epoch (its
    ///          deadline plus lock_ttl), compared with Redis's own clock
    /// Reply    1 stored over our claim (or already stored by an earlier try of this call);
    ///          2 stored after our claim had expired; 0 not stored, another request owns the key
    public static let complete = RedisScript(
        """
        local current = redis.call('GET', KEYS[1])
        if not current then
          local now = redis.call('TIME')
          if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) <= tonumber(ARGV[5]) then return 0 end
          if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then
            if ARGV[4] ~= 'none' then redis.pcall(ARGV[4], KEYS[1], 'done') end
            return 2
          end
          return 0
        end
        if string.sub(current, 3, 18) ~= ARGV[1] then return 0 end
        if string.byte(current, 2) == 1 then
          redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
          if ARGV[4] ~= 'none' then redis.pcall(ARGV[4], KEYS[1], 'done') end
        end
        return 1
        """)
}

/// Whether the `complete` script announces a completion to retries waiting for it.
public enum CompletionWakeUp: Sendable, Equatable {
    case nobody
    /// With this command: `PUBLISH`, or `SPUBLISH` for a cluster's shard channel.
    case publish(String)

    /// The script's ARGV[4].
    public var argument: String {
        switch self {
        case .nobody: return "none"
        case .publish(let command): return command
        }
    }
}
