import RedisClient

extension RedisScript {
    /// Claims a key in one atomic step (SPEC §3 rule 4).
    ///
    /// KEYS[1]  record key
    /// ARGV[1]  in-flight record (ours: our owner token and the request fingerprint)
    /// ARGV[2]  lock_ttl in milliseconds
    /// Reply    integer 1 when the key was free and now holds ARGV[1];
    ///          otherwise the existing record as a bulk string
    public static let claim = RedisScript(
        """
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
          return 1
        end
        return redis.call('GET', KEYS[1])
        """)
}
