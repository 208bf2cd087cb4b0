// The Vercel AI SDK (`ai` with `@ai-sdk/openai`'s chat model) and the OpenAI JavaScript SDK's
// `runTools` helper against the service, unchanged but for the base URL and key: a tool loop
// with `streamText`, an object with `generateObject`, a tool loop with `runTools`.
//
// Run by functions/local/tests/chat_surface.rs against a server process whose upstream answers by
// prompt (NODE_PATH: the packages infra/tools.sh installs under .local/node); exits non-zero on
// the first failed check and prints one JSON line per call.
//
//     node ai_sdk.cjs BASE_URL KEY

"use strict";
const assert = require("node:assert/strict");
const { streamText, generateObject, tool, stepCountIs } = require("ai");
const { createOpenAI } = require("@ai-sdk/openai");
const { z } = require("zod");
const openai = require("openai");

const [baseUrl, key] = process.argv.slice(2);
const provider = createOpenAI({ baseURL: `${baseUrl}/v1`, apiKey: key });
const model = provider.chat("test-model");
const temperatures = { Oslo: 21, Rome: 25 };
const ran = [];

function report(fields) {
  console.log(JSON.stringify(fields));
}

async function main() {
  // streamText with a tool: the SDK runs the calls the stream brings, sends the results back,
  // and streams the answer.
  const result = streamText({
    model,
    prompt: "weather in Oslo and Rome",
    tools: {
      get_weather: tool({
        description: "The weather of a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          ran.push(city);
          return { temp: temperatures[city] };
        },
      }),
    },
    stopWhen: stepCountIs(3),
    maxRetries: 0,
  });
  let text = "";
  for await (const piece of result.textStream) text += piece;
  assert.deepEqual(ran, ["Oslo", "Rome"]);
  assert.equal(text, "Oslo has 21 degrees, Rome 25.");
  const steps = await result.steps;
  assert.equal(steps.length, 2);
  assert.equal(steps[0].finishReason, "tool-calls");
  assert.deepEqual(
    steps[0].toolCalls.map((c) => [c.toolCallId, c.toolName, c.input]),
    [
      ["call_oslo", "get_weather", { city: "Oslo" }],
      ["call_rome", "get_weather", { city: "Rome" }],
    ],
  );
  report({ call: "streamText" });

  // generateObject with a schema: structured output through response_format.
  const { object } = await generateObject({
    model,
    schema: z.object({ name: z.string(), day: z.string() }),
    prompt: "extract the event",
    maxRetries: 0,
  });
  assert.deepEqual(object, { name: "Launch", day: "Friday" });
  report({ call: "generateObject" });

  // The OpenAI SDK's runTools: the same loop, without streaming.
  const client = new openai.OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: key, maxRetries: 0 });
  ran.length = 0;
  const runner = client.chat.completions.runTools({
    model: "test-model",
    messages: [{ role: "user", content: "weather in Oslo and Rome" }],
    tools: [
      {
        type: "function",
        function: {
          name: "get_weather",
          description: "The weather of a city",
          parameters: { type: "object", properties: { city: { type: "string" } } },
          parse: JSON.parse,
          function: async ({ city }) => {
            ran.push(city);
            return { temp: temperatures[city] };
          },
        },
      },
    ],
  });
  assert.equal(await runner.finalContent(), "Oslo has 21 degrees, Rome 25.");
  assert.deepEqual(ran, ["Oslo", "Rome"]);
  report({ call: "runTools" });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
