"""Sends N streamed /v1/chat/completions calls one after another (bench/instructions.sh): plain,
or with the three function tools the side-by-side bench offers (bench/src/stream_bench.rs)."""
import http.client
import json
import sys

TOOLS = [{"type": "function", "function": {
    "name": name, "description": "Looks something up for the user",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "description": "What to look up"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50}},
        "required": ["query"]}}} for name in ("search_docs", "get_weather", "lookup_order")]

port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
if mode == "tools":
    body.update({"tools": TOOLS, "tool_choice": "auto"})
payload = json.dumps(body)
for _ in range(n):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("POST", "/v1/chat/completions", payload, {"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200 or b"[DONE]" not in data:
        sys.exit(f"{mode}: {resp.status} {data[:300]!r}")
    conn.close()
