import RedisClient

extension RedisScript {
    /// Gives a claim back so that a retry runs the request again (docs/behaviour.md §3, rule 8), only if the
    /// claim is still ours and still in flight.
    ///
    /// KEYS[1]  record key
    /// ARGV[1]  our owner token (16 bytes; record bytes 3–18 in Lua's 1-based indexing)
    /// ARGV[2]  PUBLISH or SPUBLISH: publishes "released" on the channel named KEYS[1] so that
    ///          a waiting retry claims at once (best effort, as in `complete`); `none`: no one
    ///          is woken (`CompletionWakeUp.nobody`)
    /// ARGV[3]  optional, for a claim whose answer never came: its deadline (milliseconds since
    ///          the epoch). Nothing is done while Redis's clock has not passed it, since the
    ///          claim may still run (a claim script refuses itself after it); once it has, the
    ///          claim ran or never will, so a release then is certainly the later of the two
    /// Reply    1 released; 0 not ours (expired or taken over), nothing changed; -1 the
    ///          deadline of ARGV[3] has not passed yet, nothing changed
    public static let release = RedisScript(
        """
        if ARGV[3] then
          local now = redis.call('TIME')
          if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) <= tonumber(ARGV[3]) then
            return -1
          end
        end
        local current = redis.call('GET', KEYS[1])
        if current and string.sub(current, 3, 18) == ARGV[1] and string.byte(current, 2) == 1 then
          redis.call('DEL', KEYS[1])
          if ARGV[2] ~= 'none' then redis.pcall(ARGV[2], KEYS[1], 'released') end
          return 1
        end
        return 0
        """)
}
