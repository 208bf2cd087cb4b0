"""A local OpenAI-compatible upstream for bench/instructions.sh: every POST answers a streamed
chat completion of 20 content chunks, the finish chunk, the usage chunk and [DONE], at once."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chunk(delta, finish=None):
    return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


PARTS = ([chunk({"role": "assistant", "content": ""})]
         + [chunk({"content": f"w{i} "}) for i in range(20)]
         + [chunk({}, "stop"),
            {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "m", "choices": [],
             "usage": {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29}}])
BODY = ("".join(f"data: {json.dumps(p)}\n\n" for p in PARTS) + "data: [DONE]\n\n").encode()


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Upstream).serve_forever()
