"""A full-page PNG of a leaderboard site, taken in headless Chromium (as the site's browser tests open it).

    .venv/bin/python scripts/site_screenshot.py demo_out/site/index.html results/demo/site.png [--width 1400]
        [--height 1800]   # only the top of the page; without it the whole page

Needs Debian's chromium + chromium-driver (`bash scripts/setup_browser.sh` as root) and selenium (pinned in the
test extras). The page is waited on until every chart has drawn."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def screenshot(page: Path, out: Path, width: int = 1400, height: int | None = None,
               timeout_s: float = 60) -> Path:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never reaches for the network
    with tempfile.TemporaryDirectory() as home:
        opts = webdriver.ChromeOptions()
        opts.binary_location = str(CHROMIUM)
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},1000"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER),
                                                               env={**os.environ, "HOME": home, "TMPDIR": home}))
        try:
            driver.get(page.resolve().as_uri())
            deadline = time.monotonic() + timeout_s
            drawn = ("return [...document.querySelectorAll('.plotly-graph-div')]"
                     ".every(c => c.querySelector('.main-svg'))")
            while not driver.execute_script(drawn):
                if time.monotonic() > deadline:
                    raise SystemExit(f"error: the charts of {page} did not draw within {timeout_s:.0f} s")
                time.sleep(0.2)
            if height is None:
                height = int(driver.execute_script("return document.documentElement.scrollHeight")) + 50
            driver.set_window_size(width, min(int(height), 16000))
            time.sleep(0.5)  # let plotly re-layout to the new size
            out.parent.mkdir(parents=True, exist_ok=True)
            if not driver.save_screenshot(str(out)):
                raise SystemExit(f"error: Chromium could not write {out}")
        finally:
            driver.quit()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path, help="the site's index.html")
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, help="only the top HEIGHT pixels (default: the whole page)")
    args = ap.parse_args()
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER, args.page) if not p.exists()]
    if missing:
        print(f"error: {', '.join(missing)} missing — run `bash scripts/setup_browser.sh` as root for Chromium, "
              "and `benchmark leaderboard --format html` for the site", file=sys.stderr)
        return 2
    print(screenshot(args.page, args.out, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
