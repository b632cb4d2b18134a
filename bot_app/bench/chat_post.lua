-- wrk script: POST /api/v1/chat with a bearer token (token from env BENCH_TOKEN)
wrk.method = "POST"
wrk.body = '{"message": "hello from wrk"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  local non2xx = summary.errors.status or 0
  io.write(string.format("BENCH non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    non2xx, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
