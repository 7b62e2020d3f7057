-- wrk script: a protected POST with a unique Idempotency-Key per request (first-time path).
-- Usage: wrk ... -s first-time.lua URL -- RUN_ID
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = (args[1] or "run") .. "-" .. tostring(tid) .. "-"
  counter = 0
  body = '{"amount":100,"currency":"eur"}'
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, {
    ["Idempotency-Key"] = prefix .. counter,
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench",
  }, body)
end

dofile(os.getenv("BENCH_LIB"))
