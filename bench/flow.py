"""The click-to-visible benchmark (issue #18, point 1): how long after a job finishes its image
is on screen, as a person sees it, next to the provider's latency.

Serves `python -m app` with its built-in emulator at `--latency` seconds per image on a fresh
data folder, opens the Create page in headless Chromium (Debian's, through Playwright), types a
prompt and clicks Generate, and waits until the job card shows the image (the <img> has loaded).
For each run it records, on the machine's one clock: the click, the job's `finished_at` (the
moment the images were stored, from the JSON API) and the image's load event. Every figure is
reported as a ratio to the provider's latency, measured side by side in the same run:

- finish to visible: what the card's polling adds after the job is done; target < 0.3 s,
  i.e. < 0.3x the provider's latency at the default 1 s;
- click to visible: everything a person waits, for information;
- the first jobs of a fresh install (no history of the model yet) are reported on their own
  row, with the same target: the page's watch (app.views.polling) tells the card of the change
  whenever it comes, so they need no history (the polling fallback's fast window does).

    python -m bench.flow                  # 3 first jobs + 11 measured, about a minute
    python -m bench.flow --runs 3         # a quick run
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import requests

from bench.runner import Stats, fmt_ms, mark, print_machine, print_table

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FINISH_TO_VISIBLE_S = 0.3  # the goal
FIRST_JOBS = 3  # app.views.polling.MIN_HISTORY: jobs before the fallback knows the model's latency

# Records, in the page, when the first image of a card in the job list has loaded (epoch ms).
WATCH_IMAGES = """
() => {
  window.__visibleAt = null;
  const list = document.getElementById("job-list");
  const seen = (img) => {
    const done = () => {
      if (window.__visibleAt === null) {
        window.__visibleAt = performance.timeOrigin + performance.now();
      }
    };
    if (img.complete && img.naturalWidth > 0) done();
    else img.addEventListener("load", done, { once: true });
  };
  const known = new Set(list.querySelectorAll(".thumbs img"));
  new MutationObserver(() => {
    for (const img of list.querySelectorAll(".thumbs img")) {
      if (!known.has(img)) { known.add(img); seen(img); }
    }
  }).observe(list, { childList: true, subtree: true });
}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(data_dir: Path, latency: float) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI_", "OPENAI_"))}
    env.pop("DATABASE_URL", None)
    env.update(
        ATELIER_DATA_DIR=str(data_dir),
        ATELIER_AUTH="off",
        ATELIER_EMULATOR_PORT="0",
        ATELIER_EMULATOR_LATENCY_SECONDS=str(latency),
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [PYTHON, "-m", "app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError((data_dir / "server.log").read_text()[-2000:])
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return process, base
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not answer /healthz within 60 s")
        time.sleep(0.05)


def epoch_ms(stamp: str) -> float:
    """The API's ISO 8601 time (UTC) as epoch milliseconds."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment.timestamp() * 1000


def one_run(page: object, base: str, prompt: str) -> dict[str, float]:
    """Generate from the Create page; return the click, finish and visible times (epoch ms)."""
    page.goto(base + "/")  # type: ignore[attr-defined]
    page.evaluate(WATCH_IMAGES)  # type: ignore[attr-defined]
    page.fill("#prompt", prompt)  # type: ignore[attr-defined]
    clicked = page.evaluate(  # type: ignore[attr-defined]
        "() => { const t = performance.timeOrigin + performance.now();"
        " document.querySelector('#prompt-form button[type=submit]').click(); return t; }"
    )
    page.wait_for_function("() => window.__visibleAt !== null", timeout=60_000)  # type: ignore[attr-defined]
    visible = page.evaluate("() => window.__visibleAt")  # type: ignore[attr-defined]
    card = page.locator("#job-list .job-card").first  # type: ignore[attr-defined]
    job_id = int(card.get_attribute("id").removeprefix("job-"))
    job = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job}")
    return {"clicked": clicked, "finished": epoch_ms(job["finished_at"]), "visible": visible}


def run(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("bench.flow needs Debian's chromium on PATH (make chromium)", file=sys.stderr)
        return 1
    print(
        f"Atelier click-to-visible benchmark: python -m app with the built-in emulator at "
        f"{options.latency:g} s per image; headless Chromium; {FIRST_JOBS} first jobs + "
        f"{options.runs} measured"
    )
    print_machine()
    data_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-flow-"))
    process = None
    try:
        process, base = start_app(data_dir, options.latency)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page()
            runs = [
                one_run(page, base, f"A lighthouse at dusk, take {n + 1}")
                for n in range(FIRST_JOBS + options.runs)
            ]
            browser.close()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=20)
        shutil.rmtree(data_dir, ignore_errors=True)
    return report(options, runs[:FIRST_JOBS], runs[FIRST_JOBS:])


def report(
    options: argparse.Namespace, first: list[dict[str, float]], measured: list[dict[str, float]]
) -> int:
    latency_ms = options.latency * 1000
    rows = []
    missed = []
    for label, runs, target in (
        (
            f"Jobs {FIRST_JOBS + 1}-{FIRST_JOBS + len(measured)} (model's latency known)",
            measured,
            True,
        ),
        (f"Jobs 1-{FIRST_JOBS} (fresh install: no history)", first, True),
    ):
        after = Stats(tuple(r["visible"] - r["finished"] for r in runs))
        total = Stats(tuple(r["visible"] - r["clicked"] for r in runs))
        ok = after.median < FINISH_TO_VISIBLE_S * 1000 if target else None
        if ok is False:
            missed.append(f"{label}: finish to visible {after.median:.0f} ms median")
        rows.append(
            [
                label,
                f"{options.latency:g} s",
                fmt_ms(after.median),
                fmt_ms(max(r["visible"] - r["finished"] for r in runs)),
                f"{after.median / latency_ms:.2f}x",
                fmt_ms(total.median),
                f"{total.median / latency_ms:.2f}x",
                f"< {FINISH_TO_VISIBLE_S:g} s ({FINISH_TO_VISIBLE_S * 1000 / latency_ms:.1f}x)"
                if target
                else "(reference)",
                mark(ok) if target else "",
            ]
        )
    print("\nClick to visible image (ms; ratios are to the provider's latency):")
    print_table(
        [
            "Jobs",
            "Provider latency",
            "Finish to visible",
            "max",
            "vs latency",
            "Click to visible",
            "vs latency",
            "Target (finish to visible)",
            "Result",
        ],
        rows,
        align="llrrrrrll",
    )
    if missed:
        print("Missed: " + "; ".join(missed))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--latency", type=float, default=1.0, help="emulator seconds per image")
    parser.add_argument("--runs", type=int, default=11, help="measured jobs after the first ones")
    return parser.parse_args(argv)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
