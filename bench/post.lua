-- wrk script for the benchmarks (bench/assign.py, bench/redeem.py): one JSON POST per
-- request, its body made from a template.
--
--   wrk ... -s bench/post.lua <url> -- <path> <body template> <threads> [limit per thread]
--
-- In the template, {thread} is the wrk thread's number (1, 2, ...; handed out in
-- setup()), {n} the request's number within its thread (1, 2, ...) and {seq} a number
-- no other request of the run has: ({n} - 1) * <threads> + {thread}. So
-- '{"recipient_id":"<run tag>-{thread}-{n}"}' gives every request its own recipient,
-- and '{"code":"U{seq}"}' walks the codes U1, U2, ... once each, across threads.
--
-- The bearer token comes from the BENCH_TOKEN environment variable (never on the
-- command line). With a limit, each thread stops after that many responses and
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
  template = args[2]
  threads_in_all = tonumber(args[3])
  limit = tonumber(args[4] or "0")
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
  local seq = (sent - 1) * threads_in_all + thread_no
  local body = template:gsub("{thread}", tostring(thread_no))
  body = body:gsub("{n}", tostring(sent)):gsub("{seq}", tostring(seq))
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
