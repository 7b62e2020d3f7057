import RedisClient

/// The records API's scripts (docs/behaviour.md, "The records API").
extension RedisScript {
    /// A record and what is left of its life, read together.
    ///
    /// KEYS[1]  record key
    /// Reply    [the record or nil, PTTL in milliseconds (-2 no key, -1 no expiry)]
    public static let inspect = RedisScript(
        """
        return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
        """)

    /// Deletes a record for an operator. A completed record is deleted. An in-flight claim is
    /// left alone unless forced; forced, it becomes a tombstone (state 4, another owner) for
    /// the rest of its lock: the running request's completion is owner-checked against it and
    /// stores nothing, while the next claim takes the key as if nothing were there. Waiting
    /// retries are woken, as by a release.
    ///
    /// KEYS[1]  record key
    /// ARGV[1]  `force` to delete an in-flight claim, anything else not to
    /// ARGV[2]  the tombstone (`IdempotencyRecord.tombstone`)
    /// ARGV[3]  PUBLISH or SPUBLISH, as in `release` (best effort)
    /// Reply    0 nothing there; 1 a completed record deleted; 2 in flight, left alone;
    ///          3 in flight, made a tombstone
    public static let forget = RedisScript(
        """
        local current = redis.call('GET', KEYS[1])
        if not current or string.byte(current, 2) == 4 then return 0 end
        if string.byte(current, 2) == 1 then
          if ARGV[1] ~= 'force' then return 2 end
          redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
          redis.pcall(ARGV[3], KEYS[1], 'released')
          return 3
        end
        redis.call('DEL', KEYS[1])
        return 1
        """)
}
