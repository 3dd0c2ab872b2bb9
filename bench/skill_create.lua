-- wrk script: POST /api/v1/skills, each request a new skill (unique slug per thread and request).
-- The token comes from the environment, and BENCH_SLUG_PREFIX (default bench) when two wrk runs share a database.
-- `thread_id` is a global on purpose: setup() sets it in each thread's own Lua state.
local counter = 0
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
end

function request()
  counter = counter + 1
  local slug = string.format("%s-%d-%d-%d", os.getenv("BENCH_SLUG_PREFIX") or "bench", thread_id, os.time() % 100000, counter)
  local body = string.format(
    '{"slug":"%s","name":"Bench skill %d","description":"Created by bench/run.sh to measure skill creation.",' ..
    '"category":"benchmark","tags":["bench","load"],"runner":{"type":"builtin","name":"echo"},"inputSchema":{"type":"object"}}',
    slug, counter)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["Authorization"] = "Bearer " .. os.getenv("STEWARD_BENCH_TOKEN")}, body)
end
