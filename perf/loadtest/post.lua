-- wrk script for perf/loadtest.sh: POSTs one short sentence per request (cycling through sentences.txt) to /embed or
-- /tag, and appends one JSON line with the run's figures to $LOADTEST_OUT when the run ends.
local endpoint = os.getenv("LOADTEST_ENDPOINT") or "embed"
local sentences = {}
for line in io.lines(os.getenv("LOADTEST_SENTENCES")) do
  if #line > 0 then sentences[#sentences + 1] = line end
end
local bodies = {}
for i, s in ipairs(sentences) do
  local quoted = '"' .. s:gsub('\\', '\\\\'):gsub('"', '\\"') .. '"'
  if endpoint == "embed" then bodies[i] = '{"texts":[' .. quoted .. ']}' else bodies[i] = '{"text":' .. quoted .. '}' end
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  n = n % #bodies + 1
  return wrk.format(nil, "/" .. endpoint, nil, bodies[n])
end

done = function(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(os.getenv("LOADTEST_OUT"), "a"))
  f:write(string.format(
    '{"kind":"wrk","label":"%s","endpoint":"%s","connections":%s,"requests":%d,"seconds":%.3f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"socket_errors":%d}\n',
    os.getenv("LOADTEST_LABEL"), endpoint, os.getenv("LOADTEST_CONNECTIONS"), summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    e.status, e.connect + e.read + e.write + e.timeout))
  f:close()
end
