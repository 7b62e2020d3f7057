import RedisClient

extension RedisScript {
    /// Claims a key in one atomic step (docs/behaviour.md, rule 4), unless the claimer has
    /// given up on it: a claim that reaches Redis after its deadline (it waited in a stalled
    /// server's socket) writes nothing, so that it cannot lock the key for lock_ttl. A record
    /// that is there is returned whatever the time: a late retry still meets it. Our own
    /// in-flight claim (an earlier try whose answer never came) is renewed for lock_ttl when in
    /// time, so that the lock runs from this claim, as a fresh one would. A tombstone (a record
    /// the records API deleted while in flight, state 4) counts as nothing there.
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
        if current and string.byte(current, 2) == 4 then current = nil end
        local now = redis.call('TIME')
        local late = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[3])
        if current then
          if not late and string.byte(current, 2) == 1 and string.sub(current, 3, 18) == string.sub(ARGV[1], 3, 18) then
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
          end
          return current
        end
        if late then
          return 2
        end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return 1
        """)
}
