-- wrk script: POST /api/v1/executions running the echo sample. The token comes from the environment.
wrk.method = "POST"
wrk.body = '{"skillId":"echo","input":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("STEWARD_BENCH_TOKEN")
