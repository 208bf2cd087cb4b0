// The playground: one page over the service's own API. Everything a model, a prompt or a
// snippet says is put in the page as text (textContent, text nodes), never as HTML: answers are
// rendered as markdown by markdown.js, which builds elements around text nodes, and the <mark>
// of search snippets is rebuilt from their text.

import { render } from "/playground/markdown.js";
import { showUsage } from "/playground/usage.js";

const $ = (id) => document.getElementById(id);
const streamBase = (document.querySelector('meta[name="stream-url"]')?.content ?? "").replace(/\/$/, "");
const store = {
  get: (k) => localStorage.getItem(`llm-stream.${k}`),
  set: (k, v) => (v == null ? localStorage.removeItem(`llm-stream.${k}`) : localStorage.setItem(`llm-stream.${k}`, v)),
};

const state = {
  key: store.get("key") ?? "",
  threadId: store.get("thread"), // the open thread
  continueFrom: null, // the turn a Send continues (the latest turn with text)
  running: null, // { id, controller } of the answer streaming now
  current: null, // { prompt, previous_id } of the turn in the answer area (what Regenerate redoes)
  answer: "", // the text of the answer in the answer area, as it streams
};

class ServiceError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// ---- talking to the service ------------------------------------------------------------

async function call(url, options = {}) {
  const headers = { ...(options.headers ?? {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  let resp;
  try {
    resp = await fetch(url, { ...options, headers });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ServiceError("unreachable", "Could not reach the service. Is it running?");
  }
  if (resp.ok) return resp;
  const body = await resp.json().catch(() => null);
  const code = body?.error?.code ?? `http_${resp.status}`;
  const message = body?.error?.message ?? `The service answered HTTP ${resp.status}.`;
  if (resp.status === 401) {
    showKeyForm();
    throw new ServiceError(code, state.key
      ? `The API key was refused (${message}). Enter another one above.`
      : "This service needs an API key: enter it above.");
  }
  throw new ServiceError(code, message);
}

const json = async (url, options) => (await call(url, options)).json();

/** The events of a text/event-stream response: { name, data, id }. */
async function* sse(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { name: "message", data: "", id: null };
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue; // keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.name = text;
        else if (field === "data") event.data += text;
        else if (field === "id") event.id = text;
      }
      if (event.data) yield { ...event, data: JSON.parse(event.data) };
    }
  }
}

// ---- showing things --------------------------------------------------------------------

function showError(error) {
  if (error?.name === "AbortError") return;
  const box = $("error");
  box.textContent = error ? `${error.message}${error.code ? ` (${error.code})` : ""}` : "";
  box.hidden = !error;
}

function showKeyForm() {
  $("key-form").hidden = false;
}

function statusLine(turn) {
  const parts = [turn.status];
  if (turn.error) parts.push(turn.error);
  if (turn.provider && turn.model) parts.push(`${turn.provider} · ${turn.model}`);
  const fallbacks = (turn.attempts?.length ?? 1) - 1;
  if (fallbacks > 0) {
    const failed = turn.attempts.filter((a) => a.error_code).map((a) => `${a.provider}: ${a.error_code}`);
    parts.push(`${fallbacks} fallback${fallbacks === 1 ? "" : "s"} (${failed.join(", ")})`);
  }
  if (turn.finish_reason) parts.push(`finish: ${turn.finish_reason}`);
  const tokens = turn.usage?.total_tokens ?? turn.total_tokens;
  if (tokens != null) parts.push(`${tokens} tokens`);
  if (turn.saved === false) parts.push("not saved yet (kept in the log)");
  return parts.join(" · ");
}

/** The calls a turn made, each collapsed: its name, then its arguments when opened. */
function toolCalls(calls) {
  return (calls ?? []).map((call) => {
    const details = document.createElement("details");
    details.className = "tool-call";
    const summary = document.createElement("summary");
    summary.textContent = `Tool call: ${call.name}`;
    const pre = document.createElement("pre");
    let args = call.arguments;
    try {
      args = JSON.stringify(JSON.parse(args), null, 2);
    } catch {
      // Not JSON (a model may write anything): shown as written.
    }
    pre.textContent = args;
    details.append(summary, pre);
    return details;
  });
}

/** Sets the answer area's text, rendered as markdown (at most once a frame while streaming). */
let renderQueued = false;
function setAnswer(text) {
  state.answer = text;
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    $("answer").replaceChildren(render(state.answer));
  });
}

/** Shows `turn` (a stored conversation) in the answer area. */
function showCurrent(turn) {
  $("asked").textContent = turn?.prompt ?? "";
  $("asked").hidden = !turn;
  state.answer = turn?.response ?? "";
  $("answer").replaceChildren(render(state.answer));
  $("calls").replaceChildren(...toolCalls(turn?.tool_calls));
  $("status").textContent = turn ? statusLine(turn) : "";
  state.current = turn ? { prompt: turn.prompt, previous_id: turn.previous_id ?? null } : null;
  setRunning(state.running);
}

function earlierTurn(turn) {
  const li = document.createElement("li");
  li.className = "turn";
  const q = document.createElement("p");
  q.className = "q";
  q.textContent = turn.prompt;
  const a = document.createElement("div");
  a.className = "a";
  a.append(render(turn.response), ...toolCalls(turn.tool_calls));
  const s = document.createElement("p");
  s.className = "muted";
  s.textContent = statusLine(turn);
  li.append(q, a, s);
  return li;
}

/** The current answer moves up among the earlier turns. */
function retireCurrent() {
  if ($("asked").hidden) return;
  const li = document.createElement("li");
  li.className = "turn";
  const q = document.createElement("p");
  q.className = "q";
  q.textContent = $("asked").textContent;
  const a = document.createElement("div");
  a.className = "a";
  a.append(render(state.answer), ...$("calls").childNodes);
  const s = document.createElement("p");
  s.className = "muted";
  s.textContent = $("status").textContent;
  li.append(q, a, s);
  $("turns").append(li);
  showCurrent(null);
}

function highlighted(snippet) {
  const out = document.createDocumentFragment();
  let inMark = false;
  for (const piece of snippet.split(/(<mark>|<\/mark>)/)) {
    if (piece === "<mark>" || piece === "</mark>") {
      inMark = piece === "<mark>";
    } else if (piece) {
      if (inMark) {
        const mark = document.createElement("mark");
        mark.textContent = piece;
        out.append(mark);
      } else {
        out.append(document.createTextNode(piece));
      }
    }
  }
  return out;
}

function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleString();
}

// ---- threads and search ----------------------------------------------------------------

async function loadThreads() {
  const page = await json("/threads?limit=50");
  const list = $("threads");
  list.replaceChildren(...page.items.map((t) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = t.title || "(empty prompt)";
    if (t.id === state.threadId) b.setAttribute("aria-current", "true");
    const small = document.createElement("small");
    small.textContent = `${t.turns} turn${t.turns === 1 ? "" : "s"} · ${when(t.updated_at)}`;
    b.append(small);
    b.addEventListener("click", () => openThread(t.id).catch(showError));
    li.append(b);
    return li;
  }));
  $("threads-empty").hidden = page.items.length > 0;
}

/** Shows a thread: its latest branch, oldest first; the latest turn in the answer area. */
async function openThread(id, { quiet = false } = {}) {
  if (state.running) return;
  // Every turn, a page (at most 100 turns, at most 5 MB) at a time.
  const items = [];
  let cursor = "";
  do {
    const page = await json(`/threads/${encodeURIComponent(id)}?limit=100&cursor=${encodeURIComponent(cursor)}`);
    items.push(...page.items);
    cursor = page.next_cursor ?? "";
  } while (cursor);
  state.threadId = id;
  store.set("thread", id);
  const byId = new Map(items.map((t) => [t.id, t]));
  const latest = items.reduce((a, b) => (b.created_at >= a.created_at ? b : a), items[0]);
  const chain = [];
  for (let t = latest; t; t = t.previous_id ? byId.get(t.previous_id) : null) chain.unshift(t);
  $("turns").replaceChildren(...chain.slice(0, -1).map(earlierTurn));
  state.continueFrom = [...chain].reverse().find((t) => t.response)?.id ?? null;
  $("instructions").value = latest.system ?? "";
  if (latest.status === "streaming") {
    reattach(latest); // follows the answer to its end; errors are shown there
  } else {
    showCurrent(latest);
  }
  if (!quiet) showError(null);
  for (const b of $("threads").querySelectorAll("button")) b.removeAttribute("aria-current");
  loadThreads().catch(showError);
}

function newThread() {
  if (state.running) return;
  state.threadId = null;
  state.continueFrom = null;
  store.set("thread", null);
  $("turns").replaceChildren();
  $("instructions").value = "";
  showCurrent(null);
  showError(null);
  for (const b of $("threads").querySelectorAll("button")) b.removeAttribute("aria-current");
  $("prompt").focus();
}

async function search(query) {
  const box = $("results-box");
  if (!query.trim()) {
    box.hidden = true;
    return;
  }
  const page = await json(`/search?limit=20&query=${encodeURIComponent(query)}`);
  const list = $("results");
  list.replaceChildren(...page.items.map((item) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.append(highlighted(item.snippet || item.prompt));
    const small = document.createElement("small");
    small.textContent = `${item.prompt.slice(0, 60)} · ${when(item.created_at)}`;
    b.append(small);
    b.addEventListener("click", () => openThread(item.thread_id ?? item.id).catch(showError));
    li.append(b);
    return li;
  }));
  if (page.items.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "No matches.";
    list.append(li);
  }
  box.hidden = false;
}

// ---- answers ---------------------------------------------------------------------------

function setRunning(running) {
  state.running = running;
  $("send").disabled = Boolean(running);
  $("stop").disabled = !running?.id;
  $("new-thread").disabled = Boolean(running);
  $("regenerate").disabled = Boolean(running) || !state.current;
  store.set("running", running?.id ?? null);
}

/** Reads an answer's events into the answer area until its final event. */
async function follow(resp, running) {
  let ended = false;
  for await (const event of sse(resp)) {
    if (event.name === "start") {
      running.id = event.data.id;
      setRunning(running);
      $("status").textContent = "answering…";
    } else if (event.name === "delta") {
      setAnswer(state.answer + event.data.text);
    } else if (event.name === "done" || event.name === "error") {
      ended = true;
      $("answer").replaceChildren(render(state.answer)); // the whole answer, before the status
      const turn = { ...event.data, status: event.data.status };
      if (event.name === "error") turn.error = event.data.code;
      $("status").textContent = statusLine(turn);
      if (event.name === "error" && event.data.code !== "cancelled") {
        showError(new ServiceError(event.data.code, `The answer stopped: ${event.data.message}`));
      }
      if (event.data.thread_id) {
        state.threadId = event.data.thread_id;
        store.set("thread", state.threadId);
      }
      if (state.answer) state.continueFrom = event.data.id;
    }
  }
  if (!ended) {
    throw new ServiceError("interrupted", "The connection ended before the answer did. Reload to pick it up again.");
  }
}

/**
 * Sends `prompt` after the thread's latest turn; or, regenerating, as a branch beside the turn in
 * the answer area (the same `previous_id`), which it replaces there.
 */
async function send(prompt, { regenerate = false } = {}) {
  const previous = regenerate ? state.current?.previous_id : state.continueFrom;
  const running = { id: null, controller: new AbortController() };
  setRunning(running);
  showError(null);
  if (regenerate) showCurrent(null);
  else retireCurrent();
  $("asked").textContent = prompt;
  $("asked").hidden = false;
  $("status").textContent = "sending…";
  state.current = { prompt, previous_id: previous ?? null };
  const body = { prompt };
  if (previous) body.previous_id = previous;
  const instructions = $("instructions").value;
  if (instructions.trim()) body.system = instructions;
  if ($("model").value) body.model = $("model").value;
  try {
    const resp = await call(`${streamBase}/stream`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: running.controller.signal,
    });
    if (!regenerate) $("prompt").value = "";
    loadThreads().catch(() => {});
    await follow(resp, running);
    // The stored turn names the provider that answered, and the fallbacks.
    const stored = await json(`/history/${encodeURIComponent(running.id)}`).catch(() => null);
    if (stored) $("status").textContent = statusLine(stored);
  } catch (error) {
    if (!running.id) {
      // Nothing was started: the prompt goes back into the box.
      if (!regenerate) $("prompt").value = prompt;
      showCurrent(null);
    } else {
      $("status").textContent = "interrupted";
    }
    showError(error);
  } finally {
    setRunning(null);
    loadThreads().catch(() => {});
  }
}

/** Picks up a turn that is still being answered: the whole text so far, then the rest. */
async function reattach(turn) {
  const running = { id: turn.id, controller: new AbortController() };
  setRunning(running);
  $("asked").textContent = turn.prompt;
  $("asked").hidden = false;
  state.answer = "";
  $("answer").replaceChildren();
  $("calls").replaceChildren();
  $("status").textContent = "answering…";
  state.current = { prompt: turn.prompt, previous_id: turn.previous_id ?? null };
  try {
    const resp = await call(`${streamBase}/stream/${encodeURIComponent(turn.id)}`, {
      signal: running.controller.signal,
    });
    await follow(resp, running);
  } catch (error) {
    showError(error);
  } finally {
    setRunning(null);
  }
}

async function stop() {
  const id = state.running?.id;
  if (!id) return;
  $("stop").disabled = true;
  $("status").textContent = "stopping…";
  try {
    await call(`${streamBase}/stream/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  } catch (error) {
    if (error.code !== "already_finished") showError(error);
  }
}

// ---- wiring ----------------------------------------------------------------------------

$("prompt-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const prompt = $("prompt").value;
  if (!prompt.trim()) {
    showError(new ServiceError("empty_prompt", "Type a prompt first."));
    return;
  }
  if (!state.running) send(prompt);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    $("prompt-form").requestSubmit();
  }
});
$("stop").addEventListener("click", stop);
$("model").addEventListener("change", () => store.set("model", $("model").value || null));
$("regenerate").addEventListener("click", () => {
  if (!state.running && state.current) send(state.current.prompt, { regenerate: true });
});
$("new-thread").addEventListener("click", newThread);
$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  search($("search").value).catch(showError);
});
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.key = $("key").value.trim();
  store.set("key", state.key || null);
  start();
});

/** The models the service serves (`/v1/models`), in the Model picker. */
async function loadModels() {
  const list = await json("/v1/models");
  const chosen = store.get("model") ?? "";
  const options = list.data.map((m) => {
    const o = document.createElement("option");
    o.value = m.id;
    o.textContent = m.id;
    return o;
  });
  $("model").replaceChildren($("model").options[0], ...options);
  if (list.data.some((m) => m.id === chosen)) $("model").value = chosen;
}

async function start() {
  loadModels().catch(() => {});
  try {
    await loadThreads();
    showError(null);
  } catch (error) {
    showError(error);
    return;
  }
  const runningId = store.get("running");
  if (state.threadId) {
    await openThread(state.threadId, { quiet: true }).catch((error) => {
      if (error.code === "not_found") newThread();
      else showError(error);
    });
  } else if (runningId) {
    const turn = await json(`/history/${encodeURIComponent(runningId)}`).catch(() => null);
    if (turn?.status === "streaming") await reattach(turn);
  }
}

$("usage").addEventListener("click", () => showUsage(json, $("usage-view")).catch(showError));

if (state.key) $("key").value = state.key;
start();
