import RedisClient

extension RedisScript {
    /// Claims a key in one atomic step (docs/behaviour.md, rule 4), unless the claimer has
    /// given up on it: a claim that reaches Redis after its deadline (it waited in a stalled
    /// server's socket) writes nothing, so that it cannot lock the key for lock_ttl. A record
    /// that is there is returned whatever the time: a late retry still meets it.
    ///
    /// KEYS[1]  record key
    /// ARGV[1]  in-flight record (ours: our owner token and the request fingerprint)
    /// ARGV[2]  lock_ttl in milliseconds
    /// ARGV[3]  the claimer's deadline, in milliseconds since the epoch, compared with Redis's
    ///          own clock (`TIME`)
    /// Reply    the existing record as a bulk string; otherwise integer 1 when the key now
    ///          holds ARGV[1], or integer 2 when the deadline had passed and nothing was written
    public static let claim = RedisScript(
        """
        local current = redis.call('GET', KEYS[1])
        if current then
          return current
        end
        local now = redis.call('TIME')
        if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[3]) then
          return 2
        end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return 1
        """)
}
