-- Shared by the bench scripts: at the end of a run, write a summary line and the latency
-- percentile curve to $BENCH_OUT for scripts/bench to read.
function done(summary, latency, requests)
  local f = io.open(os.getenv("BENCH_OUT"), "w")
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout
  f:write(string.format("summary %d %d %d\n", summary.requests, summary.duration, errors))
  -- x = number of nines: 0 -> p0, 1 -> p90, 2 -> p99, 3 -> p99.9, 4 -> p99.99
  for i = 0, 80 do
    local x = i * 0.05
    local p = 100 * (1 - 10 ^ (-x))
    f:write(string.format("pct %.2f %.4f %.3f\n", x, p, latency:percentile(p) / 1000))
  end
  f:close()
end
