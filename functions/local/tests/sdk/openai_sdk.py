"""The official OpenAI Python SDK against the service, unchanged but for its base URL and key.

Run by functions/local/tests/openai_sdk.rs against a server process; exits non-zero on the first
failed check. Prints one JSON line per call with what the Rust side checks further (the ids of
the stored turns).

    python openai_sdk.py BASE_URL KEY
"""

import json
import sys

import openai

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
messages = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Name a quokka fact."},
    {"role": "assistant", "content": "They smile."},
    {"role": "user", "content": [{"type": "text", "text": "And where do quokkas live?"}]},
]


def report(**fields):
    print(json.dumps(fields), flush=True)


# Without streaming: a chat.completion with usage.
raw = client.chat.completions.with_raw_response.create(model="test-model", messages=messages)
completion = raw.parse()
assert completion.object == "chat.completion", completion
assert completion.choices[0].message.role == "assistant"
assert completion.choices[0].message.content == "Rottnest Island.", completion
assert completion.choices[0].finish_reason == "stop", completion
assert completion.usage.total_tokens == 12, completion.usage
report(call="plain", id=raw.headers["x-conversation-id"], completion_id=completion.id)

# Streaming, with the usage chunk: one id, role first, then content, finish, usage, [DONE].
stream = client.chat.completions.create(
    model="test-model",
    messages=[{"role": "user", "content": "stream the quokka answer"}],
    stream=True,
    stream_options={"include_usage": True},
)
chunks = list(stream)
assert len({c.id for c in chunks}) == 1, [c.id for c in chunks]
assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == "Rottnest Island.", text
finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
assert [c.choices[0].finish_reason for c in finished] == ["stop"], finished
assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 12, chunks[-1]
report(call="stream_usage", completion_id=chunks[0].id)

# Streaming without the usage chunk.
with client.chat.completions.with_streaming_response.create(
    model="test-model",
    messages=[{"role": "user", "content": "stream without usage"}],
    stream=True,
) as response:
    turn_id = response.headers["x-conversation-id"]
    chunks = list(response.parse())
assert all(c.choices for c in chunks), chunks
assert all(c.usage is None for c in chunks), chunks
report(call="stream", id=turn_id)

# The models.
models = client.models.list()
assert [m.id for m in models.data] == ["test-model", "other-model"], models
assert client.models.retrieve("test-model").id == "test-model"
report(call="models")

# Typed errors.
try:
    client.chat.completions.create(model="test-model", messages=messages, n=2)
    raise AssertionError("n=2 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.param == "n", (e.status_code, e.body)
try:
    client.chat.completions.create(model="test-model", messages=[])
    raise AssertionError("empty messages were accepted")
except openai.BadRequestError as e:
    assert e.type == "invalid_request_error", e.body
try:
    client.chat.completions.create(model="not-served", messages=messages)
    raise AssertionError("an unlisted model was accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e.body
try:
    openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0).models.list()
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError as e:
    assert e.code == "invalid_api_key", e.body
report(call="errors")

# A provider failure after the first chunk ends the stream with an error, not a hang.
stream = client.chat.completions.create(
    model="test-model", messages=[{"role": "user", "content": "fail midway"}], stream=True
)
got = []
try:
    for chunk in stream:
        got.extend(c.delta.content or "" for c in chunk.choices)
    raise AssertionError("the stream ended without an error")
except openai.APIError as e:
    assert "provider" in str(e.message), e
assert "".join(got) == "Half ", got
report(call="midway")
