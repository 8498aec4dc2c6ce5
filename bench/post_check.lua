-- wrk script for bench/run.sh warm-ups: the same request as post.lua, and every response is
-- checked: status 200, no X-Nimbus-Function-Error header, body contains "Hello, ada!".
-- done() prints one line "check: ok=N bad=M first_bad=<status> <body>" for the runner to parse.
wrk.method = "POST"
wrk.body = '{"name":"ada"}'
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("NIMBUS_TOKEN")
if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

ok, bad, first_bad = 0, 0, ""

function response(status, headers, body)
    local ferr = headers["X-Nimbus-Function-Error"] or headers["x-nimbus-function-error"]
    if status == 200 and not ferr and body and body:find("Hello, ada!", 1, true) then
        ok = ok + 1
    else
        bad = bad + 1
        if first_bad == "" then
            first_bad = tostring(status) .. " " .. (ferr or "") .. " " .. tostring(body):sub(1, 200):gsub("%s+", " ")
        end
    end
end

function done(summary, latency, requests)
    local o, b, f = 0, 0, ""
    for _, t in ipairs(threads) do
        o = o + t:get("ok")
        b = b + t:get("bad")
        if f == "" then f = t:get("first_bad") end
    end
    io.write(string.format("check: ok=%d bad=%d first_bad=%s\n", o, b, f))
end
