-- Cycles through pre-generated signed bodies (bench/gen-bodies.pl), each
-- thread through its own share, so no body is sent twice unless the file
-- runs out (reported as "wrapped").  Answers that are not 200 are counted
-- from wrk's own status errors (every answer outside 2xx and 3xx): the
-- module answers only 200, 401, 403, 405, 413 and 503, and nginx's
-- `return 200` only 200, so no Lua response() callback is needed (it would
-- cost the client CPU that the server under test shares).
--
-- MC_BENCH_ONCE=PREFIX (scripts/bench-rss): each body is sent once; a thread
-- whose bodies are used up sends "GET /done" instead (a `return 204` of the
-- bench's nginx) and, once it has as many answers other than 204 as bodies,
-- creates the file PREFIX.<thread number> and stops: wrk itself runs for
-- its -d, so the caller waits for the files and ends wrk with SIGINT (it
-- then reports).  (A server without /done ends the run early: warm-ups
-- of the Node peer.)

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
    idx, wrapped, answers = 0, 0, 0
    -- wrk calls thread 0's request() once to check what it returns, and
    -- sends nothing of it: that call must not use up a body
    verify = tid == 0
end

local once = os.getenv("MC_BENCH_ONCE")
if once then
    function response(status)
        if status == 204 then
            return
        end
        answers = answers + 1
        if answers == #bodies then
            io.open(once .. "." .. tid, "w"):close()
            wrk.thread:stop()
        end
    end

    -- a GET /done every 50 ms a connection, not as fast as nginx answers:
    -- the last bodies of the other threads get the CPU
    function delay()
        return idx >= #bodies and 50 or 0
    end
end

function request()
    if verify then
        verify = false
        return wrk.format("POST", nil, {}, bodies[1])
    end
    idx = idx + 1
    if idx > #bodies then
        if once then
            return wrk.format("GET", "/done")
        end
        idx, wrapped = 1, 1
    end
    return wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-Hub-Signature-256"] = sigs[idx],
        ["User-Agent"] = "facebookexternalua"
    }, bodies[idx])
end

function done(summary, latency, requests)
    local wrap = 0
    for _, t in ipairs(threads) do
        wrap = wrap + t:get("wrapped")
    end
    local e = summary.errors
    io.write(string.format(
        "MCBENCH requests=%d ok=%d non200=%d errors=%d rps=%.1f "
        .. "p50_ms=%.2f p99_ms=%.2f max_ms=%.2f wrapped=%d\n",
        summary.requests, summary.requests - e.status, e.status,
        e.connect + e.read + e.write + e.timeout,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        latency.max / 1000, wrap))
end
