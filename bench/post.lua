-- wrk script for bench/run.sh: POST the event with the admin token (measurement runs).
wrk.method = "POST"
wrk.body = '{"name":"ada"}'
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("NIMBUS_TOKEN")
if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
end
