// The official OpenAI JavaScript SDK against the service, unchanged but for its base URL and key:
// the same checks as openai_sdk.py, the same report lines.
//
// Run by functions/local/tests/openai_sdk.rs against a server process (NODE_PATH: the SDK that
// infra/tools.sh installs under .local/node); exits non-zero on the first failed check.
//
//     node openai_sdk.cjs BASE_URL KEY

"use strict";
const assert = require("node:assert/strict");
const openai = require("openai");

const [baseUrl, key] = process.argv.slice(2);
const client = new openai.OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: key, maxRetries: 0 });
const messages = [
  { role: "system", content: "Answer briefly." },
  { role: "user", content: "Name a quokka fact." },
  { role: "assistant", content: "They smile." },
  { role: "user", content: [{ type: "text", text: "And where do quokkas live?" }] },
];

function report(fields) {
  console.log(JSON.stringify(fields));
}

/** Runs `call`, which must fail with an error of `kind`; returns that error. */
async function refused(kind, call) {
  try {
    await call();
  } catch (e) {
    assert.ok(e instanceof kind, `expected ${kind.name}, got ${e}`);
    return e;
  }
  assert.fail(`expected ${kind.name}, the call succeeded`);
}

async function main() {
  // Without streaming: a chat.completion with usage.
  const { data: completion, response } = await client.chat.completions
    .create({ model: "test-model", messages })
    .withResponse();
  assert.equal(completion.object, "chat.completion");
  assert.equal(completion.choices[0].message.role, "assistant");
  assert.equal(completion.choices[0].message.content, "Rottnest Island.");
  assert.equal(completion.choices[0].finish_reason, "stop");
  assert.equal(completion.usage.total_tokens, 12);
  report({
    call: "plain",
    id: response.headers.get("x-conversation-id"),
    completion_id: completion.id,
  });

  // Streaming, with the usage chunk: one id, role first, then content, finish, usage, [DONE].
  let chunks = [];
  const withUsage = await client.chat.completions.create({
    model: "test-model",
    messages: [{ role: "user", content: "stream the quokka answer" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of withUsage) chunks.push(chunk);
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  const text = chunks
    .filter((c) => c.choices.length)
    .map((c) => c.choices[0].delta.content ?? "")
    .join("");
  assert.equal(text, "Rottnest Island.");
  const reasons = chunks
    .filter((c) => c.choices.length && c.choices[0].finish_reason)
    .map((c) => c.choices[0].finish_reason);
  assert.deepEqual(reasons, ["stop"]);
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.total_tokens, 12);
  report({ call: "stream_usage", completion_id: chunks[0].id });

  // Streaming without the usage chunk.
  const { data: plainStream, response: streamed } = await client.chat.completions
    .create({
      model: "test-model",
      messages: [{ role: "user", content: "stream without usage" }],
      stream: true,
    })
    .withResponse();
  chunks = [];
  for await (const chunk of plainStream) chunks.push(chunk);
  assert.ok(chunks.every((c) => c.choices.length));
  assert.ok(chunks.every((c) => c.usage == null));
  report({ call: "stream", id: streamed.headers.get("x-conversation-id") });

  // The models.
  const models = await client.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    ["test-model", "other-model"],
  );
  assert.equal((await client.models.retrieve("test-model")).id, "test-model");
  report({ call: "models" });

  // Typed errors.
  let e = await refused(openai.BadRequestError, () =>
    client.chat.completions.create({ model: "test-model", messages, n: 2 }),
  );
  assert.equal(e.status, 400);
  assert.equal(e.param, "n");
  e = await refused(openai.BadRequestError, () =>
    client.chat.completions.create({ model: "test-model", messages: [] }),
  );
  assert.equal(e.type, "invalid_request_error");
  e = await refused(openai.NotFoundError, () =>
    client.chat.completions.create({ model: "not-served", messages }),
  );
  assert.equal(e.code, "model_not_found");
  const wrongKey = new openai.OpenAI({
    baseURL: `${baseUrl}/v1`,
    apiKey: "sk-wrong",
    maxRetries: 0,
  });
  e = await refused(openai.AuthenticationError, () => wrongKey.models.list());
  assert.equal(e.code, "invalid_api_key");
  report({ call: "errors" });

  // A provider failure after the first chunk ends the stream with an error, not a hang.
  const failing = await client.chat.completions.create({
    model: "test-model",
    messages: [{ role: "user", content: "fail midway" }],
    stream: true,
  });
  const got = [];
  e = await refused(openai.APIError, async () => {
    for await (const chunk of failing) {
      for (const c of chunk.choices) got.push(c.delta.content ?? "");
    }
  });
  assert.match(e.message, /provider/);
  assert.equal(got.join(""), "Half ");
  report({ call: "midway" });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
