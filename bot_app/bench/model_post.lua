-- wrk script: POST straight to the fake model (reference run)
wrk.method = "POST"
wrk.body = '{"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
