-- Cycles through pre-generated signed bodies (bench/gen-bodies.pl), each
-- thread through its own share, so no body is sent twice unless the file
-- runs out (reported as "wrapped").  Counts every answer that is not 200.

local threads = {}
local nthreads = 0

function setup(thread)
    nthreads = nthreads + 1
    thread:set("tid", nthreads - 1)
    table.insert(threads, thread)
end

function init(args)
    local file = os.getenv("MC_BENCH_BODIES")
    local step = tonumber(os.getenv("MC_BENCH_THREADS") or "2")
    sigs, bodies = {}, {}
    local n = 0
    for line in io.lines(file) do
        if n % step == tid then
            local sp = line:find(" ", 1, true)
            table.insert(sigs, line:sub(1, sp - 1))
            table.insert(bodies, line:sub(sp + 1))
        end
        n = n + 1
    end
    idx, non200, status200, wrapped = 0, 0, 0, 0
end

function request()
    idx = idx + 1
    if idx > #bodies then
        idx, wrapped = 1, 1
    end
    return wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-Hub-Signature-256"] = sigs[idx],
        ["User-Agent"] = "facebookexternalua"
    }, bodies[idx])
end

function response(status, headers, body)
    if status == 200 then
        status200 = status200 + 1
    else
        non200 = non200 + 1
    end
end

function done(summary, latency, requests)
    local ok, bad, wrap = 0, 0, 0
    for _, t in ipairs(threads) do
        ok = ok + t:get("status200")
        bad = bad + t:get("non200")
        wrap = wrap + t:get("wrapped")
    end
    io.write(string.format(
        "MCBENCH requests=%d ok=%d non200=%d errors=%d rps=%.1f "
        .. "p50_ms=%.2f p99_ms=%.2f wrapped=%d\n",
        summary.requests, ok, bad,
        summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.status + summary.errors.timeout,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, wrap))
end
