-- wrk script for bench/run: POSTs $BENCH_BODY with Content-Type JSON and
-- the extra headers in $BENCH_HEADERS ("Name: value" lines), and prints
-- one machine-readable line at the end (latencies in microseconds).

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"

for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
    local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
    if name then
        wrk.headers[name] = value
    end
end

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d rps=%.1f p50=%d p90=%d p99=%d "
        .. "max=%d mean=%.1f non2xx=%d connect=%d read=%d write=%d "
        .. "timeout=%d bytes=%d\n",
        summary.requests, summary.duration,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max, latency.mean,
        e.status, e.connect, e.read, e.write, e.timeout, summary.bytes))
end
