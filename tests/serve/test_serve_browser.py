"""maskdiff serve's page in a real headless Chromium (Playwright driving Debian's chromium; no browser
download): type a template, start, watch the states arrive and finish with the fixed words unchanged.
The screenshot is kept as a test artifact (in $MASKDIFF_ARTIFACTS when set, else pytest's tmp_path)."""
import os
import shutil
from pathlib import Path

import pytest
from playwright import sync_api  # make test installs the test-serve extra: a missing one fails, never skips

import maskdiff
from helpers import ServerThread
from maskdiff.sampling import SAMPLERS
from maskdiff.serve import Limits, create_app

pytestmark = pytest.mark.slow  # a headless browser

# Headless flags for a closed network: without the background-networking ones Chromium keeps trying
# (and failing) to reach its update and sync services.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEMPLATE = "to be or [12] to be"


def launch_chromium(playwright):
    """Debian's chromium (make test installs it with apt-get). The one case this test skips: no chromium on
    PATH and no root, so make test could not install it; a chromium that is there and fails to start fails."""
    path = os.environ.get("MASKDIFF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and os.geteuid() != 0:
        pytest.skip("no chromium on PATH, and make test could not install it: apt-get install chromium needs root")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)


def test_the_page_streams_the_unmasking_and_keeps_the_fixed_words(served_run, tmp_path):
    pipe = maskdiff.load(served_run)
    app = create_app(pipe, run=str(served_run), limits=Limits())
    artifacts = Path(os.environ.get("MASKDIFF_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    with ServerThread(app) as url, sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 640})
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#sampler option').length > 0")
            assert page.eval_on_selector_all("#sampler option", "os => os.map(o => o.value)") == list(SAMPLERS)
            assert "L = 32" in page.text_content("#model")
            page.fill("#text", TEMPLATE)
            page.select_option("#sampler", "ancestral")
            page.fill("#steps", "1000")
            page.fill("#num", "2")
            # every state the page draws: (step shown, masked positions left)
            page.evaluate("""() => { window.seen = []; new MutationObserver(() => window.seen.push(
                [Number(document.getElementById('step').textContent), document.querySelectorAll('.tok.masked').length]))
                .observe(document.getElementById('step'), {childList: true, characterData: true, subtree: true}); }""")
            page.click("#start")
            page.wait_for_selector("#state[data-state=done]", timeout=120_000)
            seen = page.evaluate("window.seen")
            partial = [s for s in seen if s[1] > 0]
            assert len(partial) >= 2, seen  # the unmasking arrived step by step, not all at once
            assert partial[0][1] > partial[-1][1]  # masks went down as the steps came in
            texts = page.eval_on_selector_all(".sample", "ds => ds.map(d => d.textContent)")
            assert len(texts) == 2
            for text in texts:
                assert text.startswith("to be or ") and text.endswith(" to be") and len(text) == len("to be or  to be") + 12
            fixed = page.eval_on_selector_all(".sample", "ds => ds.map(d => [...d.querySelectorAll('.tok.fixed')].map(s => s.textContent).join(''))")
            assert fixed == ["to be or  to be"] * 2
            assert page.query_selector_all(".tok.masked") == []
            colours = page.eval_on_selector_all(".sample .tok:not(.fixed)", "ss => new Set(ss.map(s => s.style.background)).size")
            assert colours >= 2  # coloured by the step that revealed them
            assert "per sample" in page.text_content("#nfe") and page.text_content("#seconds").endswith(" s")
            shot = artifacts / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")
            # several prompts, one per line (POST /generate/stream): each row's text and network calls
            page.check("#many")
            page.fill("#text", "the [4] is\n\nto be or [6] not")
            page.click("#start")
            page.wait_for_selector("#state[data-state=done]", timeout=120_000)
            rows = page.eval_on_selector_all(".sample", "ds => ds.map(d => d.firstChild.textContent)")
            notes = page.eval_on_selector_all(".row-note", "ns => ns.map(n => n.textContent)")
            assert [len(r) for r in rows] == [len("the  is") + 4, len("to be or  not") + 6], rows
            assert rows[0].startswith("the ") and rows[1].startswith("to be or ") and rows[1].endswith(" not")
            assert [n.split(":")[0] for n in notes] == ["row 0", "row 1"] and all("network calls" in n for n in notes)
            assert "per row" in page.text_content("#nfe")
        finally:
            browser.close()
