-- wrk script: POST an OpenAI chat request; print one machine-readable line at the end.
-- Environment: MODEL (default "canned"), STREAM ("1" adds "stream":true), AUTH (bearer key).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("AUTH")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
local stream = os.getenv("STREAM") == "1" and ',"stream":true' or ""
wrk.body = '{"model":"' .. (os.getenv("MODEL") or "canned")
  .. '","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16' .. stream .. '}'

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("BENCH %d %.1f %.3f %.3f %.3f %d %d %d\n", summary.requests,
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, errors, summary.duration,
    summary.bytes))
end
