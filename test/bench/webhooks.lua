-- webhooks.lua: wrk script for test/bench/webhooks.sh.
--
--   wrk -s webhooks.lua URL -- BODIES_FILE THREADS
--
-- BODIES_FILE holds one request per line, "signature<TAB>body", signed
-- beforehand (wrk's Lua has no HMAC).  Thread k of THREADS takes lines
-- k, k+THREADS, ... and sends each once, in order; after its last line it
-- starts again, and done() reports how many requests were such repeats.
local threads = {}
local counter = 0

function setup(thread)
	thread:set("id", counter)
	counter = counter + 1
	table.insert(threads, thread)
end

function init(args)
	local file, nthreads = args[1], tonumber(args[2] or "1")
	reqs, pos, repeats = {}, 0, 0
	local i = 0
	for line in io.lines(file) do
		if i % nthreads == id then
			local sig, body = line:match("^(%x+)\t(.*)$")
			reqs[#reqs + 1] = wrk.format("POST", nil,
				{ ["Content-Type"] = "application/json", ["X-Maileroo-Signature"] = sig }, body)
		end
		i = i + 1
	end
end

function request()
	pos = pos + 1
	if pos > #reqs then
		pos = 1
	end
	if wrapped then
		repeats = repeats + 1
	elseif pos == #reqs then
		wrapped = true
	end
	return reqs[pos]
end

function done(summary, latency, requests)
	local r = 0
	for _, t in ipairs(threads) do
		r = r + (t:get("repeats") or 0)
	end
	io.write(string.format("repeats %d\n", r))
	io.write(string.format("latency_p50_us %d\nlatency_p99_us %d\n",
		latency:percentile(50), latency:percentile(99)))
end
