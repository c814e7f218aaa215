-- wrk script of the phantomgate benchmark (bench/lib/wrk.ts runs it).
-- Authorization values come one per line from the file named by WRK_AUTH_FILE: one value is sent as a static
-- header (wrk's fast path); several are rotated request by request from requests built once in init().
-- done() prints one JSON line with exact microsecond percentiles from wrk's histogram.

local function read_lines(path)
  local lines = {}
  if path == nil or path == "" then return lines end
  for line in io.lines(path) do
    if line ~= "" then lines[#lines + 1] = line end
  end
  return lines
end

local authorizations = read_lines(os.getenv("WRK_AUTH_FILE"))

if #authorizations == 1 then
  wrk.headers["Authorization"] = authorizations[1]
elseif #authorizations > 1 then
  local requests = {}
  local next_index = 1

  function init(_)
    for i, value in ipairs(authorizations) do
      local headers = {}
      for name, header in pairs(wrk.headers) do headers[name] = header end
      headers["Authorization"] = value
      requests[i] = wrk.format(nil, nil, headers)
    end
  end

  function request()
    local req = requests[next_index]
    next_index = next_index % #requests + 1
    return req
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"wrk":true,"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.3f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
