"""The official OpenAI Python SDK calling tools, asking for structured output and meeting typed
upstream errors through the service, unchanged but for its base URL and key.

Run by functions/local/tests/chat_surface.rs against a server process whose upstream is a local
OpenAI-compatible server that answers by prompt (see there). Exits non-zero on the first failed
check; prints one JSON line per call with what the Rust side checks further.

    python tools_sdk.py BASE_URL KEY
"""

import json
import sys

import openai
import pydantic

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
MODEL = "test-model"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def report(**fields):
    print(json.dumps(fields), flush=True)


def user(text):
    return [{"role": "user", "content": text}]


def streamed_calls(prompt):
    """The calls of a streamed answer, rebuilt by index as OpenAI documents it."""
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=user(prompt), tools=TOOLS, stream=True
    ) as response:
        turn = response.headers["x-conversation-id"]
        calls, finish, first = {}, None, {}
        for chunk in response.parse():
            for choice in chunk.choices:
                for tc in choice.delta.tool_calls or []:
                    call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                    if tc.id:
                        # The id and the type come once, on a call's first fragment.
                        assert call["id"] is None, ("a second id at one index", tc)
                        assert tc.type == "function", tc
                        call["id"] = tc.id
                        first[tc.index] = True
                    assert first.get(tc.index), ("a fragment before its call's id", tc)
                    if tc.function and tc.function.name:
                        call["name"] = tc.function.name
                    if tc.function and tc.function.arguments:
                        call["arguments"] += tc.function.arguments
                if choice.finish_reason:
                    finish = choice.finish_reason
    return [calls[i] for i in sorted(calls)], finish, turn


def plain_calls(prompt):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(prompt), tools=TOOLS, tool_choice="auto"
    )
    completion = raw.parse()
    message = completion.choices[0].message
    assert message.content is None, message
    calls = [
        {"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
        for t in message.tool_calls
    ]
    return calls, completion.choices[0].finish_reason, raw.headers["x-conversation-id"]


def without_ids(calls):
    return [{k: v for k, v in c.items() if k != "id"} for c in calls]


# Parallel calls, as OpenAI streams them; at one index with a new id each (Gemini's and Ollama's
# adapters); and a call in one piece without an id. Streamed and not, the same calls.
expected = {
    "weather in Oslo and Rome": [
        {"id": "call_oslo", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"id": "call_rome", "name": "get_weather", "arguments": '{"city":"Rome"}'},
    ],
    "weather at one index": [
        {"id": "g1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"id": "g2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
    ],
    "weather in one piece": [
        {"id": None, "name": "get_weather", "arguments": '{"city":"Paris"}'},
    ],
}
for prompt, calls in expected.items():
    streamed, s_finish, s_turn = streamed_calls(prompt)
    plain, p_finish, p_turn = plain_calls(prompt)
    assert (s_finish, p_finish) == ("tool_calls", "tool_calls"), (prompt, s_finish, p_finish)
    if calls[0]["id"] is None:
        for got in (streamed, plain):
            assert all(c["id"].startswith("call_") and len(c["id"]) > 10 for c in got), got
        assert without_ids(streamed) == without_ids(plain) == without_ids(calls), (streamed, plain)
    else:
        assert streamed == plain == calls, (prompt, streamed, plain)
    report(call="tools", prompt=prompt, streamed=s_turn, plain=p_turn, calls=plain)

# A tool-result round trip: the assistant's calls and the results go back; the answer is text.
first = client.chat.completions.create(
    model=MODEL, messages=user("weather in Oslo and Rome"), tools=TOOLS
)
calls = first.choices[0].message.tool_calls
messages = user("weather in Oslo and Rome") + [
    first.choices[0].message.model_dump(exclude_none=True),
    {"role": "tool", "tool_call_id": calls[1].id, "content": '{"temp": 25}'},
    {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": 21}'},
]
raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, tools=TOOLS)
answer = raw.parse()
assert answer.choices[0].message.content == "It is 21 degrees in Oslo.", answer
assert answer.choices[0].finish_reason == "stop", answer
report(call="round_trip", id=raw.headers["x-conversation-id"])


# Structured output with the SDK's parse() helper and a pydantic model, unchanged.
class Event(pydantic.BaseModel):
    name: str
    day: str


parsed = client.chat.completions.parse(
    model=MODEL, messages=user("extract the event"), response_format=Event
)
assert parsed.choices[0].message.parsed == Event(name="Launch", day="Friday"), parsed
report(call="parse")


# The stream helper with a pydantic tool: its final completion has the parsed arguments.
class GetWeather(pydantic.BaseModel):
    city: str


with client.chat.completions.stream(
    model=MODEL,
    messages=user("weather in Oslo and Rome"),
    tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")],
) as stream:
    final = stream.get_final_completion()
parsed_args = [c.function.parsed_arguments for c in final.choices[0].message.tool_calls]
assert parsed_args == [GetWeather(city="Oslo"), GetWeather(city="Rome")], parsed_args
report(call="stream_helper")


# Typed errors from the upstream, streamed and not: its 400 with its code and param, its 429
# with Retry-After, its 401 (the operator's key) a 502.
def create(prompt, stream):
    result = client.chat.completions.create(model=MODEL, messages=user(prompt), stream=stream)
    if stream:
        list(result)


for stream in (False, True):
    try:
        create("too long", stream)
        raise AssertionError("an upstream 400 passed")
    except openai.BadRequestError as e:
        assert (e.code, e.param) == ("context_length_exceeded", "messages"), e.body
        assert "maximum context length" in e.message, e.message
    try:
        create("slow down", stream)
        raise AssertionError("an upstream 429 passed")
    except openai.RateLimitError as e:
        assert e.response.headers["retry-after"] == "7", e.response.headers
        assert e.code == "rate_limit_exceeded", e.body
    try:
        create("upstream key", stream)
        raise AssertionError("an upstream 401 passed")
    except openai.InternalServerError as e:
        assert e.status_code == 502 and e.code == "provider_auth", e.body
    try:
        create("no such upstream model", stream)
        raise AssertionError("an upstream 404 passed")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e.body
report(call="errors")

# Images: a small one and one over the 64 KB that a stored turn keeps, as data: URIs.
import base64  # noqa: E402

small = "data:image/png;base64," + base64.b64encode(b"\x89PNG small image").decode()
large = "data:image/jpeg;base64," + base64.b64encode(bytes(range(256)) * 400).decode()
raw = client.chat.completions.with_raw_response.create(
    model=MODEL,
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "compare these pictures"},
                {"type": "image_url", "image_url": {"url": small, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": large}},
            ],
        }
    ],
)
assert raw.parse().choices[0].message.content == "ok", raw.parse()
report(call="images", id=raw.headers["x-conversation-id"], small=small, large=large)

# Every parameter reaches the upstream as sent (the Rust side reads its journal); log
# probabilities come back, streamed and not.
EVERY = dict(
    seed=7,
    logit_bias={"50256": -100},
    presence_penalty=0.5,
    frequency_penalty=-0.5,
    user="user-42",
    reasoning_effort="low",
    logprobs=True,
    top_logprobs=2,
    max_completion_tokens=50,
    stop=["END"],
    top_p=0.9,
    metadata={"app": "tests"},
    service_tier="auto",
    prediction={"type": "content", "content": "ok"},
    store=False,
    modalities=["text"],
    temperature=0.3,
    parallel_tool_calls=False,
    tools=TOOLS,
    tool_choice="none",
)
plain = client.chat.completions.create(model=MODEL, messages=user("every parameter"), **EVERY)
assert plain.choices[0].message.content == "ok", plain
assert [t.token for t in plain.choices[0].logprobs.content] == ["ok"], plain.choices[0].logprobs
assert plain.choices[0].logprobs.content[0].top_logprobs[1].token == "OK", plain
tokens = []
for chunk in client.chat.completions.create(
    model=MODEL, messages=user("every parameter"), stream=True, **EVERY
):
    for choice in chunk.choices:
        if choice.logprobs and choice.logprobs.content:
            tokens.extend((t.token, t.logprob) for t in choice.logprobs.content)
assert tokens == [("ok", -0.01)], tokens
report(call="parameters", sent={k: v for k, v in EVERY.items() if k != "tools"})
