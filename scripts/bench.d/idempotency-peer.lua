-- The nginx + Lua idempotency peer scripts/bench measures idemproxy against: the same claim
-- (EVALSHA of a GET-or-SET-NX script), the upstream called as a subrequest, the answer stored
-- with SET, a replay answered from the stored record. No fingerprint, no scope, no owner check:
-- the least work an idempotency layer in nginx can do. Redis is spoken by hand (RESP over
-- ngx.socket.tcp, connections pooled) since Debian has no lua-resty-redis.
local tcp, find, sub, tonumber = ngx.socket.tcp, string.find, string.sub, tonumber
local req, var, null = ngx.req, ngx.var, ngx.null

local _M = {}
local INFLIGHT, LOCK_TTL, KEEP_TTL = "__inflight__", "60000", "86400000"
local CLAIM = "local v = redis.call('GET', KEYS[1]) if v then return v end "
           .. "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1"
local sha -- SHA1 of CLAIM; module upvalue => one SCRIPT LOAD per worker

-- RESP reply: string/number/array, ngx.null for nil, false+msg for "-ERR", nil+err on I/O error
local function read_reply(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, err end
  local t, rest = sub(line, 1, 1), sub(line, 2)
  if t == "$" then
    local n = tonumber(rest)
    if n < 0 then return null end
    local data; data, err = sock:receive(n + 2)
    return data and sub(data, 1, n), err
  elseif t == ":" then return tonumber(rest)
  elseif t == "+" then return rest
  elseif t == "-" then return false, rest
  elseif t == "*" then
    local n = tonumber(rest)
    if n < 0 then return null end
    local arr = {}
    for i = 1, n do
      local v; v, err = read_reply(sock)
      if v == nil then return nil, err end
      arr[i] = v
    end
    return arr
  end
  return nil, "bad RESP line: " .. line
end

-- args: array of strings; sent as one RESP array of bulk strings (single send)
local function cmd(sock, args)
  local n = #args
  local buf, j = { "*", n, "\r\n" }, 3
  for i = 1, n do
    local a = args[i]
    buf[j + 1], buf[j + 2], buf[j + 3], buf[j + 4], buf[j + 5] = "$", #a, "\r\n", a, "\r\n"
    j = j + 5
  end
  local ok, err = sock:send(buf)
  if ok then return read_reply(sock) end
  return nil, err
end

local function connect(port) -- reuses a pooled conn (pool name "127.0.0.1:port") if any
  local sock = tcp()
  sock:settimeouts(1000, 1000, 1000)
  local ok, err = sock:connect("127.0.0.1", port)
  if ok then return sock end
  return nil, err
end

local function claim(sock, key)
  if not sha then
    local s, err = cmd(sock, { "SCRIPT", "LOAD", CLAIM })
    if not s then return nil, err end
    sha = s
  end
  local v, err = cmd(sock, { "EVALSHA", sha, "1", key, INFLIGHT, LOCK_TTL })
  if v == false and find(err, "NOSCRIPT", 1, true) then -- script cache flushed: EVAL re-caches it
    v, err = cmd(sock, { "EVAL", CLAIM, "1", key, INFLIGHT, LOCK_TTL })
  end
  return v, err
end

local function reply(status, ctype, body, replayed)
  ngx.status = status
  local h = ngx.header
  if ctype ~= "" then h["Content-Type"] = ctype end
  h["Content-Length"] = #body
  if replayed then h["Idempotent-Replayed"] = "true" end
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK) -- headers already sent: just finalize
end

local function fail(what, err)
  ngx.log(ngx.ERR, what, ": ", err)
  return ngx.exit(503)
end

-- access_by_lua handler: returns (falls through to proxy_pass) unless POST + Idempotency-Key
function _M.handle(port)
  if req.get_method() ~= "POST" then return end
  local key = var.http_idempotency_key
  if not key then return end
  key = "idem:" .. key

  local sock, err = connect(port)
  if not sock then return fail("redis connect", err) end
  local v; v, err = claim(sock, key)
  if not v then sock:close(); return fail("redis claim", err) end
  sock:setkeepalive(0, 64)

  if v == INFLIGHT then return ngx.exit(409) end
  if v ~= 1 then -- stored record "status\ncontent-type\nbody"
    local a = find(v, "\n", 1, true)
    local b = find(v, "\n", a + 1, true)
    return reply(tonumber(sub(v, 1, a - 1)), sub(v, a + 1, b - 1), sub(v, b + 1), true)
  end

  req.read_body() -- must precede capture, else the subrequest gets no body
  local res = ngx.location.capture("/__idem_upstream",
    { method = ngx.HTTP_POST, always_forward_body = true })
  local status, body, ct = res.status, res.body or "", res.header["Content-Type"] or ""

  sock, err = connect(port) -- conn went back to the pool during the upstream call
  if not sock then
    ngx.log(ngx.ERR, "redis connect: ", err)
  else
    local args = (status >= 500 or res.truncated) and { "DEL", key } -- release claim: retryable
      or { "SET", key, status .. "\n" .. ct .. "\n" .. body, "PX", KEEP_TTL }
    local ok; ok, err = cmd(sock, args)
    if ok then sock:setkeepalive(0, 64) else sock:close(); ngx.log(ngx.ERR, "redis store: ", err) end
  end
  return reply(status, ct, body)
end

return _M
