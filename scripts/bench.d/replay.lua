-- wrk script: the same protected POST and key every time (the replay path; the first request
-- of the run stores the answer, every later one is replayed).
-- Usage: wrk ... -s replay.lua URL -- KEY
function init(args)
  key = args[1] or "bench-replay"
end

function request()
  return wrk.format("POST", nil, {
    ["Idempotency-Key"] = key,
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench",
  }, '{"amount":100,"currency":"eur"}')
end

dofile(os.getenv("BENCH_LIB"))
