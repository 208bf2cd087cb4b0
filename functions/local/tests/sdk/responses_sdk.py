"""The official OpenAI Python SDK's Responses API against two server processes on one database
(A and B, as two Lambda sandboxes), unchanged but for its base URL and key.

Run by functions/local/tests/responses.rs. Exits non-zero on the first failed check; prints one
JSON line per check with what the Rust side checks further.

    python responses_sdk.py BASE_A BASE_B KEY
"""

import json
import sys
import time

import openai

base_a, base_b, key = sys.argv[1], sys.argv[2], sys.argv[3]
a = openai.OpenAI(base_url=f"{base_a}/v1", api_key=key, max_retries=0)
b = openai.OpenAI(base_url=f"{base_b}/v1", api_key=key, max_retries=0)
MODEL = "offline-echo"
LONG = "tell me a long story about " + " ".join(f"river{i}" for i in range(40))


def report(**fields):
    print(json.dumps(fields), flush=True)


def wait_done(client, rid, statuses=("completed", "incomplete", "failed", "cancelled")):
    deadline = time.time() + 30
    while time.time() < deadline:
        r = client.responses.retrieve(rid)
        if r.status in statuses:
            return r
        time.sleep(0.1)
    raise SystemExit(f"{rid} never ended")


# Plain.
first = a.responses.create(model=MODEL, input="hello responses", instructions="Be brief.")
assert first.status == "completed", first
assert first.id.startswith("resp_"), first.id
assert 'You asked: "hello responses"' in first.output_text, first.output_text
assert first.usage.output_tokens > 0, first.usage
report(check="plain", id=first.id)

# Continued on the other process the moment the first completed; instructions not inherited.
second = b.responses.create(model=MODEL, input="and then?", previous_response_id=first.id)
assert second.previous_response_id == first.id, second
assert second.instructions is None, second.instructions
report(check="continued", id=second.id)

# Streamed: typed events, numbers strictly increasing, the deltas the whole text.
events = list(a.responses.create(model=MODEL, input="stream me", stream=True))
types = [e.type for e in events]
assert types[:4] == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added"], types
assert types[-1] == "response.completed", types
seqs = [e.sequence_number for e in events]
assert seqs == sorted(set(seqs)), seqs
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == events[-1].response.output_text, (text, events[-1].response.output_text)
report(check="streamed", id=events[-1].response.id, events=len(events))

# Re-attached on the other process after event n: every later event once, then completed.
stream = a.responses.create(model=MODEL, input=LONG, stream=True)
seen = []
for e in stream:
    seen.append(e)
    if sum(1 for x in seen if x.type == "response.output_text.delta") == 3:
        break
stream.close()
rid = seen[0].response.id
n = seen[-1].sequence_number
before = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
rest = list(b.responses.retrieve(rid, stream=True, starting_after=n))
assert all(e.sequence_number > n for e in rest), [e.sequence_number for e in rest]
rseqs = [e.sequence_number for e in rest]
assert rseqs == sorted(set(rseqs)), rseqs
assert rest[-1].type == "response.completed", rest[-1].type
after = "".join(e.delta for e in rest if e.type == "response.output_text.delta")
assert before + after == rest[-1].response.output_text, (before, after)
report(check="resumed", id=rid, after=n, events=len(rest))

# In the background, polled from the other process.
bg = a.responses.create(model=MODEL, input=LONG, background=True)
assert bg.status in ("queued", "in_progress"), bg.status
done = wait_done(b, bg.id)
assert done.status == "completed", done.status
assert "river39" in done.output_text, done.output_text
report(check="background", id=bg.id)

# Cancelled from the other process.
slow = a.responses.create(model=MODEL, input=LONG, background=True)
time.sleep(0.3)
cancelled = b.responses.cancel(slow.id)
if cancelled.status != "cancelled":
    cancelled = wait_done(b, slow.id)
assert cancelled.status == "cancelled", cancelled.status
b.responses.cancel(slow.id)  # again: harmless
report(check="cancelled", id=slow.id)

# The input items.
items = b.responses.input_items.list(first.id)
texts = [c.text for item in items.data for c in item.content]
assert texts == ["hello responses"], texts
report(check="input_items")

# Deleted (a response another continues first refuses), then a 404.
try:
    a.responses.delete(first.id)
    raise SystemExit("a continued response was deleted")
except openai.ConflictError:
    pass
b.responses.delete(second.id)
try:
    a.responses.retrieve(second.id)
    raise SystemExit("a deleted response was found")
except openai.NotFoundError:
    pass
report(check="deleted", id=second.id)

# An unknown previous response.
try:
    a.responses.create(model=MODEL, input="x", previous_response_id="resp_" + "0" * 32)
    raise SystemExit("an unknown previous_response_id was taken")
except openai.NotFoundError:
    pass

# store: false: it answers, then it is gone.
gone = a.responses.create(model=MODEL, input="forget me", store=False)
assert gone.status == "completed", gone.status
deadline = time.time() + 10
while True:
    try:
        b.responses.retrieve(gone.id)
    except openai.NotFoundError:
        break
    assert time.time() < deadline, "a store: false response stayed"
    time.sleep(0.1)
report(check="not_stored", id=gone.id)

# Anything else is a 400 naming it.
try:
    a.responses.create(model=MODEL, input="x", extra_body={"reasoning": {"effort": "low"}})
    raise SystemExit("an unknown field was taken")
except openai.BadRequestError as e:
    assert e.body["param"] == "reasoning", e.body
report(check="refused")
