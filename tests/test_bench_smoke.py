"""The benchmarks still measure what they claim: each runs at a tiny size, and every page or
job it times must actually be served. Numbers are not checked here (that is `make bench`'s
job, side by side, never a timed assertion); a benchmark quietly timing redirects is."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def run_bench(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_gallery_benchmark_times_served_pages():
    output = run_bench("bench.gallery", "--jobs", "400", "--requests", "2", "--warmups", "1")
    assert "was not served" not in output, output
    assert output.count(" 200 ") >= 6, output  # every scenario answered 200


def test_pipeline_benchmark_runs_its_jobs_to_the_end():
    output = run_bench(
        "bench.pipeline", "--jobs", "6", "--threads", "3", "--latency", "0.2",
        "--single", "2", "--async-jobs", "2", "--async-spacing", "0.05",
    )  # fmt: skip
    assert "answered 401" not in output and "Traceback" not in output, output
    assert "Targets missed" in output, output


def test_click_to_visible_benchmark_sees_its_images_in_chromium():
    output = run_bench("bench.flow", "--runs", "1", "--latency", "0.3")
    assert "Traceback" not in output, output
    assert "Finish to visible" in output and "fresh install" in output, output
