"""The playground in a real browser: headless Chromium (Debian's package) driven by Playwright,
against two server processes with the offline provider, one with AUTH=off, one with
AUTH=required. A third server's upstream answers in markdown and with tool calls. Run by
functions/local/tests/playground.rs with: BASE AUTH_BASE KEY SHOTS_DIR MD_BASE.
Every check prints what failed; the exit status is the verdict."""

import json
import os
import re
import shutil
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, AUTH_BASE, KEY, SHOTS, MD_BASE = sys.argv[1:6]
LONG = " ".join(f"word{i}" for i in range(60))  # about 100 words of answer


def api(path, base=BASE, key=None, method="GET"):
    req = urllib.request.Request(base + path, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or "null")


def newest_turn(base=BASE):
    return api("/history?limit=1", base=base)["items"][0]


def post(path, body, base=BASE):
    req = urllib.request.Request(
        base + path,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or "null")


def watch(page, base, problems):
    """Records what would break the page's promises: uncaught errors, console errors other than
    the browser's own line for an expected HTTP error, and any request to another origin."""
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}")
        if m.type == "error" and not m.text.startswith("Failed to load resource")
        else None,
    )
    page.on(
        "request",
        lambda r: problems.append(f"request to another origin: {r.url}")
        if not r.url.startswith(base + "/")
        else None,
    )


def send(page, prompt):
    page.get_by_role("textbox", name="Prompt").fill(prompt)
    page.get_by_role("button", name="Send").click()


def answer_text(page):
    return page.locator("#answer").inner_text()


def wait_status(page, word, timeout=20_000):
    expect(page.locator("#status")).to_contain_text(word, timeout=timeout)


def main():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed: run `make test` (infra/tools.sh installs it)"
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        watch(page, BASE, problems)
        page.goto(BASE + "/")
        expect(page.get_by_role("list", name="Threads")).to_be_attached()
        expect(page.get_by_label("API key")).to_be_hidden()

        # 1. An answer grows piece by piece in the Answer region.
        send(page, "hello playground")
        region = page.get_by_role("region", name="Answer")
        lengths = []
        deadline = time.time() + 20
        while time.time() < deadline:
            lengths.append(len(answer_text(page)))
            if "complete" in page.locator("#status").inner_text():
                break
            time.sleep(0.03)
        grew = sorted(set(l for l in lengths if l > 0))
        assert len(grew) >= 5, f"the answer did not grow piece by piece: {grew}"
        first = newest_turn()
        assert first["status"] == "complete", first
        expect(region).to_contain_text(first["response"])
        threads = page.get_by_role("list", name="Threads")
        expect(threads.get_by_role("button", name=re.compile("hello playground"))).to_be_visible()

        # 2. Markup in a prompt, and in the answer that restates it, is text; nothing runs.
        hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
        send(page, hostile)
        wait_status(page, "complete")
        expect(region).to_contain_text('<img src=x onerror="window.__pwned=1">')
        assert page.evaluate("window.__pwned") is None, "markup from a prompt ran"
        assert page.locator("img").count() == 0, "markup from a prompt became an element"
        assert page.locator("script").count() == 1, "a script element was added"
        second = newest_turn()
        assert second["previous_id"] == first["id"], ("Send did not continue the thread", second)
        expect(page.locator("#turns")).to_contain_text("hello playground")

        # 3. New thread starts a new one; both are listed.
        page.get_by_role("button", name="New thread").click()
        expect(page.locator("#turns")).to_be_empty()
        send(page, "another topic entirely: " + "unbroken" * 25)  # one 200-character word
        wait_status(page, "complete")
        third = newest_turn()
        assert third["previous_id"] is None and third["thread_id"] == third["id"], third
        expect(threads.get_by_role("listitem")).to_have_count(2)
        listed = api("/threads")["items"]
        assert [t["turns"] for t in listed] == [1, 2], listed

        # 4. Stop cancels the running answer.
        send(page, LONG)
        expect(page.locator("#answer")).to_contain_text("word3", timeout=10_000)
        page.get_by_role("button", name="Stop").click()
        wait_status(page, "cancelled")
        stopped = newest_turn()
        assert stopped["status"] == "cancelled", stopped
        assert len(stopped["response"]) < 500, "the answer was not stopped early"

        # 5. A reload mid-answer shows the whole answer: what was saved, then the rest.
        send(page, LONG + " again")
        expect(page.locator("#answer")).to_contain_text("word5", timeout=10_000)
        page.reload()
        wait_status(page, "complete", timeout=30_000)
        reloaded = newest_turn()
        assert reloaded["status"] == "complete", reloaded
        assert answer_text(page) == reloaded["response"], (
            "after the reload the Answer region does not hold the whole answer",
            answer_text(page),
            reloaded["response"],
        )

        # 6. Search: Enter runs it, matches highlighted, a result opens its thread.
        search = page.get_by_role("searchbox", name="Search")
        search.fill("playground")
        search.press("Enter")
        marks = page.locator("#results mark")
        expect(marks.first).to_be_visible()
        assert all(m.lower() == "playground" for m in marks.all_inner_texts()), marks.all_inner_texts()
        page.locator("#results button").first.click()
        expect(page.locator("#turns")).to_contain_text("hello playground")

        page.set_viewport_size({"width": 390, "height": 844})
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide at 390: a long line broke the layout"
        page.set_viewport_size({"width": 1280, "height": 860})

        # 7. A refused request is a readable message.
        send(page, "x" * 1200)  # MAX_PROMPT_CHARS=1000 on this server
        expect(page.get_by_role("alert")).to_contain_text("prompt", timeout=10_000)
        expect(page.get_by_role("alert")).to_contain_text("(prompt_too_long)")


        # 8. With AUTH=required the page asks for a key, keeps it, and uses it.
        keyed = context.new_page()
        watch(keyed, AUTH_BASE, problems)
        keyed.goto(AUTH_BASE + "/")
        field = keyed.get_by_label("API key")
        expect(field).to_be_visible()
        expect(keyed.get_by_role("alert")).to_contain_text("API key")
        field.fill(KEY)
        field.press("Enter")
        expect(keyed.get_by_role("alert")).to_be_hidden()
        send(keyed, "with a key")
        wait_status(keyed, "complete")
        owned = api("/history?limit=1", base=AUTH_BASE, key=KEY)["items"][0]
        assert owned["prompt"] == "with a key", owned
        keyed.reload()
        expect(keyed.get_by_role("region", name="Answer")).to_contain_text("with a key")

        # 8b. Usage: spend and tokens per day drawn by the page, and the key's budget.
        keyed.get_by_role("button", name="Usage").click()
        view = keyed.get_by_role("dialog", name="Usage")
        expect(view).to_be_visible()
        chart = view.get_by_role("img", name="Usage by day")
        expect(chart).to_be_visible()
        expect(chart.locator("rect")).to_have_count(60)  # 30 days, USD and tokens
        report = api("/usage", base=AUTH_BASE, key=KEY)
        assert report["total"]["requests"] == 1 and report["total"]["cost_usd"] > 0, report
        today = chart.locator("rect").nth(29)
        assert float(today.get_attribute("height")) > 0, "today's spend has no bar"
        expect(view).to_contain_text("1 request,")
        expect(view).to_contain_text("left today")
        assert report["key"]["remaining_usd"] < 1.0, report
        view.get_by_role("button", name="Close").click()
        expect(view).to_be_hidden()

        # 9. Answers are markdown, rendered safely; the instructions go as the system message;
        # Regenerate branches; tool calls show collapsed.
        md = context.new_page()
        watch(md, MD_BASE, problems)
        md.goto(MD_BASE + "/")
        md.get_by_role("textbox", name="Instructions").fill("Answer in markdown.")
        picker = md.get_by_role("combobox", name="Model")
        expect(picker.locator("option")).to_have_count(2)  # the default, and /v1/models' one
        picker.select_option("gpt-4o-mini")
        send(md, "show markdown")
        wait_status(md, "complete")
        wait_status(md, "openai · gpt-4o-mini")  # the provider that answered, in the footer
        answer = md.get_by_role("region", name="Answer")
        expect(answer.locator("h3")).to_have_text("Result")
        expect(answer.locator("strong")).to_have_text("bold")
        expect(answer.locator("p code")).to_have_text("inline")
        expect(answer.locator("pre code")).to_have_text('print("hi")')
        expect(answer.locator("ul li")).to_have_count(2)
        expect(answer.locator("table tr")).to_have_count(3)
        expect(answer.locator("td").last).to_have_text("4")
        expect(answer).to_contain_text('<img src=x onerror="window.__pwned=3">')
        assert md.evaluate("window.__pwned") is None, "markup from an answer ran"
        assert md.locator("img").count() == 0, "markup from an answer became an element"
        first = newest_turn(MD_BASE)
        assert first["system"] == "Answer in markdown.", first
        send(md, "once more")
        wait_status(md, "complete")
        second = newest_turn(MD_BASE)
        assert second["previous_id"] == first["id"], second
        md.get_by_role("button", name="Regenerate").click()
        deadline = time.time() + 20
        while newest_turn(MD_BASE)["id"] == second["id"] and time.time() < deadline:
            time.sleep(0.05)
        wait_status(md, "complete")
        third = newest_turn(MD_BASE)
        assert third["id"] != second["id"], "Regenerate made no turn"
        assert (third["prompt"], third["previous_id"]) == ("once more", first["id"]), third
        expect(md.locator("#asked")).to_have_text("once more")
        expect(md.locator("#turns > li")).to_have_count(1)  # a branch: the first turn above it
        tools = [{"type": "function", "function": {"name": "get_weather",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        post("/v1/chat/completions", {"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "weather in Oslo and Rome"}]}, base=MD_BASE)
        md.reload()
        md.get_by_role("list", name="Threads").get_by_role(
            "button", name=re.compile("weather in Oslo")).click()
        calls = md.locator("#calls details")
        expect(calls).to_have_count(2)
        expect(calls.first.locator("summary")).to_have_text("Tool call: get_weather")
        expect(calls.first.locator("pre")).to_be_hidden()
        calls.first.locator("summary").click()
        expect(calls.first.locator("pre")).to_contain_text('"city": "Oslo"')

        # 10. The README's screenshots: a session as a person has it (this owner has none of the
        # test's hostile or malformed prompts).
        keyed.get_by_role("button", name="New thread").click()
        send(keyed, "What does this service keep of a conversation?")
        wait_status(keyed, "complete")
        send(keyed, "And when the client goes away mid-answer?")
        wait_status(keyed, "complete")
        search = keyed.get_by_role("searchbox", name="Search")
        search.fill("conversation")
        search.press("Enter")
        expect(keyed.locator("#results mark").first).to_be_visible()
        keyed.screenshot(path=os.path.join(SHOTS, "playground-1280.png"))
        keyed.set_viewport_size({"width": 390, "height": 844})
        keyed.screenshot(path=os.path.join(SHOTS, "playground-390.png"), full_page=True)

        browser.close()
    assert not problems, "\n".join(problems)
    print("playground: all checks passed")


if __name__ == "__main__":
    main()
