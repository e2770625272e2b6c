"""A screenshot of a report page with headless Chromium, where one is installed.

    python docs/screenshot.py runs/quick/report.html docs/figures/report.png [--width 1400 --height 1000]

Uses the first of `chromium`, `chromium-browser`, `google-chrome` on PATH (Debian:
`apt-get install chromium`); exits 3 with one line when none is installed. Chromium is
started with no network access of its own (background networking, sync and component
updates off) and a fresh profile, as a test tool should be.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile


def browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def screenshot(page: str, out: str, width: int = 1400, height: int = 1000) -> str:
    exe = browser()
    if exe is None:
        raise FileNotFoundError("no headless Chromium installed (apt-get install chromium)")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nopeek-chromium-") as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}", "--hide-scrollbars",
                        f"--screenshot={os.path.abspath(out)}", "file://" + os.path.abspath(page)],
                       check=True, capture_output=True, timeout=120)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page")
    parser.add_argument("out")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    try:
        print(screenshot(args.page, args.out, args.width, args.height))
    except FileNotFoundError as err:
        print(f"screenshot: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
