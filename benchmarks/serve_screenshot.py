"""The README's screenshot of ``maskdiff serve``: the real command on a run, driven in headless Chromium.

    .venv/bin/python benchmarks/serve_screenshot.py runs/demo --out docs/figures/serve_page.png

Starts ``maskdiff serve RUN --port 0``, opens the page in Debian's chromium (Playwright, no browser
download), types the template, picks the sampler, steps and samples, presses Start, waits for the
stream to finish and saves a full-page PNG. Prints what the page showed (NFE, wall-clock, the samples).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run directory")
    p.add_argument("--out", type=Path, default=Path("docs/figures/serve_page.png"), help="PNG path (default: docs/figures/serve_page.png)")
    p.add_argument("--template", default="to be or not to be [40] that is the question [30]", help="the template typed into the page")
    p.add_argument("--sampler", default="ancestral", help="sampler chosen on the page (default: ancestral)")
    p.add_argument("--steps", default="128", help="steps (default: 128)")
    p.add_argument("--num", default="3", help="samples (default: 3)")
    p.add_argument("--seed", default="0", help="seed (default: 0)")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    server = subprocess.Popen([sys.executable, "-m", "maskdiff.cli", "serve", str(args.run), "--port", "0", "--device", "cpu"],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = server.stdout.readline()
        if " at http://" not in line:
            raise SystemExit(f"the server did not start: {line!r}")
        url = line.split(" at ")[1].split()[0]
        with sync_playwright() as playwright:
            path = shutil.which("chromium") or shutil.which("chromium-browser")
            browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 600}, device_scale_factor=1)
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#sampler option').length > 0")
            page.fill("#text", args.template)
            page.select_option("#sampler", args.sampler)
            page.fill("#steps", args.steps)
            page.fill("#num", args.num)
            page.fill("#seed", args.seed)
            page.click("#start")
            page.wait_for_selector("#state[data-state=done]", timeout=300_000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            print(f"NFE {page.text_content('#nfe')}; wall-clock {page.text_content('#seconds')}")
            for text in page.eval_on_selector_all(".sample", "ds => ds.map(d => d.textContent)"):
                print(f"  {text}")
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
