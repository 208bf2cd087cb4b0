// A small markdown renderer for answers: fenced code blocks, headings, lists, block quotes,
// tables, paragraphs, and inline code, bold, italic and http(s) links. It builds elements and
// text nodes only: no model text is ever parsed as HTML, so markup in an answer is
// shown as the text it is. Anything it does not know stays text.

const el = (tag, ...children) => {
  const e = document.createElement(tag);
  e.append(...children);
  return e;
};

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const ITEM = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const TABLE_RULE = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;

// Inline spans: code, strong (** or __ at word edges), emphasis (* or _ at word edges), links.
const INLINE = new RegExp(
  [
    "(`+)([^`][\\s\\S]*?)\\1",
    "\\*\\*(?!\\s)([\\s\\S]+?)(?<!\\s)\\*\\*",
    "(?<![\\w])__(?!\\s)([\\s\\S]+?)(?<!\\s)__(?![\\w])",
    "\\*(?![\\s*])([\\s\\S]+?)(?<![\\s*])\\*",
    "(?<![\\w])_(?![\\s_])([\\s\\S]+?)(?<![\\s_])_(?![\\w])",
    "\\[([^\\]\\n]+)\\]\\((https?:\\/\\/[^\\s)]+)\\)",
  ].join("|"),
  "g",
);

/** The inline content of `text`, as nodes. */
export function inline(text) {
  const nodes = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) nodes.push(document.createTextNode(text.slice(last, m.index)));
    if (m[1]) {
      nodes.push(el("code", m[2]));
    } else if (m[3] ?? m[4]) {
      nodes.push(el("strong", ...inline(m[3] ?? m[4])));
    } else if (m[5] ?? m[6]) {
      nodes.push(el("em", ...inline(m[5] ?? m[6])));
    } else {
      const a = el("a", ...inline(m[7]));
      a.href = m[8]; // http(s) only: the pattern admits nothing else
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      nodes.push(a);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

const cells = (line) =>
  line
    .trim()
    .replace(/^\|/, "")
    .replace(/\|$/, "")
    .split("|")
    .map((c) => c.trim());

function table(lines, i) {
  const head = cells(lines[i]);
  const t = el("table");
  t.append(el("thead", el("tr", ...head.map((c) => el("th", ...inline(c))))));
  const body = el("tbody");
  let j = i + 2;
  for (; j < lines.length && lines[j].includes("|") && lines[j].trim(); j++) {
    const row = cells(lines[j]);
    body.append(el("tr", ...head.map((_, k) => el("td", ...inline(row[k] ?? "")))));
  }
  t.append(body);
  return [t, j];
}

/** Whether line `i` starts another kind of block than a paragraph. */
function startsBlock(lines, i) {
  const line = lines[i];
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    ITEM.test(line) ||
    QUOTE.test(line) ||
    RULE.test(line) ||
    (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]))
  );
}

/** `text` as markdown, rendered into a fragment of elements and text nodes. */
export function render(text) {
  const out = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      const body = [];
      for (i++; i < lines.length && !lines[i].trimStart().startsWith(fence[1]); i++) {
        body.push(lines[i]);
      }
      i++; // the closing fence (an answer still streaming may not have it yet)
      const code = el("code", body.join("\n"));
      if (fence[2]) code.dataset.lang = fence[2];
      out.append(el("pre", code));
      continue;
    }
    if (!line.trim()) {
      i++;
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      // Levels 3 to 6: the page's own headings stay above an answer's.
      out.append(el(`h${Math.min(6, heading[1].length + 2)}`, ...inline(heading[2])));
      i++;
      continue;
    }
    if (RULE.test(line)) {
      out.append(el("hr"));
      i++;
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])) {
      let t;
      [t, i] = table(lines, i);
      out.append(t);
      continue;
    }
    const item = line.match(ITEM);
    if (item) {
      const ordered = /\d/.test(item[1][0]);
      const list = el(ordered ? "ol" : "ul");
      if (ordered && parseInt(item[1], 10) !== 1) list.start = parseInt(item[1], 10);
      for (let m; i < lines.length && (m = lines[i].match(ITEM)); i++) {
        list.append(el("li", ...inline(m[2])));
      }
      out.append(list);
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      for (let m; i < lines.length && (m = lines[i].match(QUOTE)); i++) body.push(m[1]);
      out.append(el("blockquote", render(body.join("\n"))));
      continue;
    }
    const para = [];
    for (; i < lines.length && lines[i].trim() && (para.length === 0 || !startsBlock(lines, i)); i++) {
      para.push(lines[i]);
    }
    out.append(el("p", ...inline(para.join("\n"))));
  }
  return out;
}
