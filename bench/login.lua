-- wrk script: POST /api/v1/auth/login with the benchmark admin's (correct) credentials.
wrk.method = "POST"
wrk.body = '{"email":"bench@example.com","password":"Bench-Password-42"}'
wrk.headers["Content-Type"] = "application/json"
