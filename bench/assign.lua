-- wrk script for bench/assign.py: one POST per request, each for a distinct recipient.
--
--   wrk ... -s bench/assign.lua <url> -- <path> <run tag> [limit per thread]
--
-- The bearer token comes from the BENCH_TOKEN environment variable (never on the
-- command line). Recipient ids are "<run tag>-<thread>-<counter>": the tag is random
-- per run and the thread number is handed out in setup(), so ids never repeat, across
-- threads or runs. With a limit, each thread stops after that many responses and
-- creates the file named by BENCH_DONE_FILE, if set: wrk itself only ends at its
-- duration, so the drain test watches for that file and then interrupts it.
--
-- Ends with one "BENCH_RESULT {json}" line, plus "BENCH_ERROR <status> <body>" lines
-- for the first non-2xx response of each thread, which the orchestrator parses.

local threads = {}
local next_thread = 1

function setup(thread)
  thread:set("thread_no", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

function init(args)
  path = args[1]
  tag = args[2]
  limit = tonumber(args[3] or "0")
  headers = { ["Content-Type"] = "application/json" }
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  sent = 0
  received = 0
  statuses = {}
  first_error = ""
end

function request()
  sent = sent + 1
  local body = string.format(
    '{"recipient_id":"%s-%d-%d","channel":"email"}', tag, thread_no, sent)
  return wrk.format("POST", path, headers, body)
end

function response(status, _, body)
  received = received + 1
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status >= 300 and first_error == "" then
    first_error = key .. " " .. string.gsub(body or "", "[\r\n]", " ")
  end
  if limit > 0 and received >= limit then
    local done_file = os.getenv("BENCH_DONE_FILE")
    if done_file and done_file ~= "" then
      local marker = io.open(done_file .. "." .. thread_no, "w")
      if marker then
        marker:close()
      end
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, _)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    local err = thread:get("first_error")
    if err ~= "" then
      io.write("BENCH_ERROR ", err, "\n")
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"mean_us":%.1f,"statuses":{%s},"socket_errors":{"connect":%d,'
      .. '"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, table.concat(parts, ","),
    e.connect, e.read, e.write, e.timeout))
end
