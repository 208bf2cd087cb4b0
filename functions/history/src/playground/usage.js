// The Usage view: spend and tokens per day as bars the page draws itself (SVG built with DOM
// calls; no chart library, nothing fetched from elsewhere), the totals, and what remains of the
// key's budget. Everything shown is put in as text.

const SVG = "http://www.w3.org/2000/svg";
const DAYS = 30;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
}

const usd = (x) => `$${x < 1 ? x.toFixed(4) : x.toFixed(2)}`;
const int = (n) => Number(n).toLocaleString("en-US");
const count = (n, word) => `${int(n)} ${word}${n === 1 ? "" : "s"}`;

/** The last DAYS UTC days, oldest first, as YYYY-MM-DD. */
function lastDays(now = new Date()) {
  const days = [];
  for (let i = DAYS - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - i));
    days.push(d.toISOString().slice(0, 10));
  }
  return days;
}

/** Two rows of bars, USD above and tokens below, one pair a day. */
function chart(days, byDay) {
  const width = 600, rowHeight = 90, gap = 28, left = 4, bar = (width - left) / days.length;
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${2 * rowHeight + 2 * gap}`,
    role: "img",
    "aria-label": "Usage by day",
    class: "usage-chart",
  });
  svg.append(el("title", {}, "Usage by day"));
  const rows = [
    { name: "USD a day", value: (l) => l.cost_usd, fmt: usd, cls: "bar-usd" },
    { name: "tokens a day", value: (l) => l.prompt_tokens + l.completion_tokens, fmt: int, cls: "bar-tokens" },
  ];
  rows.forEach((row, r) => {
    const top = r * (rowHeight + gap) + gap - 8;
    const max = Math.max(0, ...days.map((d) => row.value(byDay.get(d) ?? zero)));
    svg.append(el("text", { x: left, y: top - 6, class: "chart-label" },
      `${row.name} (highest ${row.fmt(max)})`));
    svg.append(el("line", { x1: left, x2: width, y1: top + rowHeight, y2: top + rowHeight, class: "axis" }));
    days.forEach((day, i) => {
      const line = byDay.get(day) ?? zero;
      const v = row.value(line);
      const h = max > 0 ? Math.max(v > 0 ? 1 : 0, (v / max) * rowHeight) : 0;
      const rect = el("rect", {
        x: left + i * bar + 1, y: top + rowHeight - h, width: Math.max(1, bar - 2), height: h, class: row.cls,
      });
      rect.append(el("title", {}, `${day}: ${row.fmt(v)} (${count(line.requests, "request")})`));
      svg.append(rect);
    });
  });
  svg.append(el("text", { x: left, y: 2 * rowHeight + 2 * gap - 2, class: "chart-label" }, days[0]));
  svg.append(el("text", { x: width, y: 2 * rowHeight + 2 * gap - 2, class: "chart-label", "text-anchor": "end" },
    days[days.length - 1]));
  return svg;
}

const zero = { requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 };

/** What remains of the key's budget, in a sentence. */
function budget(key) {
  if (!key) return "This key has no budget or limits.";
  const l = key.limits;
  const parts = [];
  const period = { day: "today", month: "this month", total: "in all" }[l.period];
  if (l.budget_usd != null) parts.push(`${usd(key.remaining_usd)} of ${usd(l.budget_usd)} left ${period}`);
  if (l.budget_tokens != null) parts.push(`${int(key.remaining_tokens)} of ${int(l.budget_tokens)} tokens left ${period}`);
  const limits = [];
  if (l.rpm != null) limits.push(`${l.rpm} requests a minute`);
  if (l.tpm != null) limits.push(`${int(l.tpm)} tokens a minute`);
  if (l.concurrency != null) limits.push(`${l.concurrency} answers at once`);
  if (limits.length) parts.push(`limits: ${limits.join(", ")}`);
  parts.push(`${key.running} running now`);
  return `Budget: ${parts.join("; ")}.`;
}

/** Fills the Usage view from `/usage` (with `json`, the page's authenticated fetch) and shows it. */
export async function showUsage(json, dialog) {
  const days = lastDays();
  const report = await json(`/usage?group_by=day&from=${days[0]}`);
  const byDay = new Map(report.items.map((l) => [l.day, l]));
  const t = report.total;
  dialog.querySelector("#usage-chart").replaceChildren(chart(days, byDay));
  dialog.querySelector("#usage-total").textContent =
    `Last ${DAYS} days: ${count(t.requests, "request")}, ${int(t.prompt_tokens)} prompt and ` +
    `${int(t.completion_tokens)} completion tokens, ${usd(t.cost_usd)}.`;
  dialog.querySelector("#usage-budget").textContent = budget(report.key);
  if (!dialog.open) dialog.showModal();
}
