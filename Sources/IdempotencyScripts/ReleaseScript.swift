import RedisClient

extension RedisScript {
    /// Gives a claim back so that a retry runs the request again (SPEC §3 rule 8), only if the
    /// claim is still ours and still in flight.
    ///
    /// KEYS[1]  record key
    /// ARGV[1]  our owner token (16 bytes; record bytes 3–18 in Lua's 1-based indexing)
    /// ARGV[2]  PUBLISH or SPUBLISH: publishes "released" on the channel named KEYS[1] so that
    ///          a waiting retry claims at once (best effort, as in `complete`); `none`: no one
    ///          is woken (`CompletionWakeUp.nobody`)
    /// Reply    1 released; 0 not ours (expired or taken over), nothing changed
    public static let release = RedisScript(
        """
        local current = redis.call('GET', KEYS[1])
        if current and string.sub(current, 3, 18) == ARGV[1] and string.byte(current, 2) == 1 then
          redis.call('DEL', KEYS[1])
          if ARGV[2] ~= 'none' then redis.pcall(ARGV[2], KEYS[1], 'released') end
          return 1
        end
        return 0
        """)
}
