"""The OpenAI Agents SDK (openai-agents) running one agent turn with a function tool against
the service's Responses API, unchanged but for its client's base URL and key.

Run by functions/local/tests/responses.rs. Prints one JSON line: the final output and the
arguments the tool was called with.

    python agents_sdk.py BASE_URL KEY
"""

import json
import sys

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

base_url, key = sys.argv[1], sys.argv[2]
set_tracing_disabled(True)
calls = []


@function_tool
def get_weather(city: str) -> str:
    """The weather of a city."""
    calls.append(city)
    return f"sunny in {city}"


client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
agent = Agent(
    name="weather",
    instructions="Answer with the tools you have.",
    model=OpenAIResponsesModel(model="offline-echo", openai_client=client),
    tools=[get_weather],
)
result = Runner.run_sync(agent, "What does get_weather say for Oslo?")
assert len(calls) == 1, calls
assert "sunny in" in str(result.final_output), result.final_output
print(json.dumps({"final": str(result.final_output), "calls": calls}), flush=True)
