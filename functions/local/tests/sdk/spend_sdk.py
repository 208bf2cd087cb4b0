"""The official OpenAI Python SDK meeting a key's limits through the service, unchanged but for
its base URL and key, with its default retries on.

Run by functions/local/tests/spend.rs against a server whose key has a spent budget and one
whose key allows one request a minute. Exits non-zero on the first failed check; prints one
JSON line per check.

    python spend_sdk.py BASE_URL BUDGET_KEY RPM_KEY
"""

import json
import sys
import time

import openai

base_url, budget_key, rpm_key = sys.argv[1], sys.argv[2], sys.argv[3]


def report(**fields):
    print(json.dumps(fields), flush=True)


def ask(key):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key)
    return client.chat.completions.create(
        model="offline-echo",
        messages=[{"role": "user", "content": "spend"}],
        max_tokens=16,
    )


# A spent budget: OpenAI's exhausted quota, raised at once (the SDK does not retry it: the
# service says `x-should-retry: false` when no retry can pass before the period ends).
started = time.monotonic()
try:
    ask(budget_key)
    raise SystemExit("a spent budget let a request through")
except openai.RateLimitError as e:
    assert e.status_code == 429, e.status_code
    assert e.code == "insufficient_quota", e.code
    assert e.type == "insufficient_quota", e.type
    assert int(e.response.headers["retry-after"]) > 60, e.response.headers
    report(check="budget", code=e.code, type=e.type, seconds=time.monotonic() - started)

# A rate limit: the first request passes, the next is OpenAI's rate limit error.
ask(rpm_key)
try:
    openai.OpenAI(base_url=f"{base_url}/v1", api_key=rpm_key, max_retries=0).chat.completions.create(
        model="offline-echo", messages=[{"role": "user", "content": "again"}]
    )
    raise SystemExit("rpm 1 let a second request through")
except openai.RateLimitError as e:
    assert e.code == "rate_limit_exceeded", e.code
    assert e.type == "rate_limit_error", e.type
    report(check="rpm", code=e.code, type=e.type)
