#!/usr/bin/env bash
# make bench-instructions: the instructions the service runs per streamed /v1/chat/completions
# call, plain and with three function tools offered, counted by valgrind's callgrind (the same
# count for the same binary and input, whatever else the machine does: no timing noise). The
# release `local serve` runs under callgrind against a local upstream (20 chunks at once);
# after 20 calls to warm up, the counters are zeroed and 200 calls are counted, one at a time.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
local_bin="${CARGO_TARGET_DIR:-$HOME/.cache/llm-stream/target}/release/local"
command -v valgrind >/dev/null || { echo "bench-instructions: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
admin="$("$root/infra/pg.sh" admin)"
db="llm_stream_bench_instructions"
url="${admin%/*}/$db"
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" 2>/dev/null
DATABASE_URL="$url" "$local_bin" migrate >/dev/null
work="$(mktemp -d)"
up_port=39011 port=39012 n=200
python3 "$root/bench/instructions/upstream.py" "$up_port" &
upstream=$!
trap 'kill $upstream 2>/dev/null; rm -rf "$work"' EXIT
count() {
  local mode=$1
  DATABASE_URL="$url" AUTH=off LLM_PROVIDER=openai OPENAI_BASE_URL="http://127.0.0.1:$up_port/v1" \
    OPENAI_API_KEY=bench PORT=$port RUST_LOG=error \
    valgrind --tool=callgrind --callgrind-out-file="$work/$mode.out" "$local_bin" serve \
    >"$work/$mode.log" 2>&1 &
  local server=$!
  for _ in $(seq 120); do curl -sf "localhost:$port/health" >/dev/null && break; sleep 0.5; done
  python3 "$root/bench/instructions/client.py" $port 20 "$mode"
  callgrind_control -z $server >/dev/null 2>&1
  python3 "$root/bench/instructions/client.py" $port $n "$mode"
  callgrind_control -d $server >/dev/null 2>&1
  kill -INT $server; wait $server 2>/dev/null || true
  # The dump after zeroing: its total is the counted calls'.
  callgrind_annotate "$work/$mode.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
plain=$(count plain)
tools=$(count tools)
python3 - "$plain" "$tools" "$n" <<'PY'
import sys
plain, tools, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print("instructions the service runs per streamed /v1/chat/completions call (callgrind, "
      f"{n} calls one at a time, the upstream answering 20 chunks at once):\n")
print("| plain | with three tools | tools ÷ plain |")
print("|---|---|---|")
print(f"| {plain / n:,.0f} | {tools / n:,.0f} | {tools / plain:.3f} |")
PY
