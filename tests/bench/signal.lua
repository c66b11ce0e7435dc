-- wrk script for the intake stages: POST /api/signal with the body the ECO app sends, spread over the
-- parents given after `--`; prints one JSON line (prefixed BENCH_JSON) with the counts and percentiles.
-- The requests are formatted once in init(): building each one in Lua would slow wrk down.
local requests = {}
local next_request = 0

function init(args)
  local headers = { ["Content-Type"] = "application/json", ["X-Eco-Guest-Id"] = "bench" }
  for i, parent in ipairs(args) do
    local body = '{"interaction_id":"' .. parent .. '","name":"bench_view","meta":{"page":"/chat","scroll":0.5}}'
    requests[i] = wrk.format("POST", "/api/signal", headers, body)
  end
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, errors.status, errors.connect, errors.read, errors.write,
    errors.timeout, latency:percentile(50), latency:percentile(99)))
end
