"""The image benchmark: thumbnail time per image, and memory while a 10-image job is stored.

1. `storage.make_thumbnails` (both WebP thumbnails, 512 and 256 px, and the placeholder colour
   from one decode) on 1024x1024 PNGs: the emulator's drawings (opaque and transparent) and a
   photo-like image (Pillow noise, blurred, over a gradient; ~1-3 MB like a real generation).
   Median/p95 over `--repeats` runs, side by side. Target: median < 80 ms. The stages of the
   photo-like case are timed alone too, to show where the time goes.
2. Peak memory while storing a 10-image job of photo-like 1024x1024 PNGs, 1-3 MB each, in a
   child process that does what `app.worker._store_slots` does after a synchronous generation:
   the API's JSON answer (base64 images) is parsed into slots, then each slot is fetched
   (`ImageFetcher.fetch`, base64 decode) and stored (`storage.store_image`). Peak RSS (VmHWM)
   minus the RSS after imports and app creation. Target < 200 MB.

    python -m bench.images
    python -m bench.images --repeats 10     # a quick run
"""

from __future__ import annotations

import argparse
import base64
import gc
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.runner import (
    bench_app,
    elapsed_ms,
    fmt_bytes,
    fmt_ms,
    mark,
    measure_side_by_side,
    print_machine,
    print_table,
)

SIZE = 1024
JOB_IMAGES = 10

# Targets from the issue.
THUMBNAILS_MS = 80.0
JOB_MEMORY_MB = 200.0

# (noise sigma, blur radius) per photo-like image: rougher images compress worse (bigger PNG).
PHOTO_PARAMS = (
    (40, 1.5),
    (55, 1.2),
    (70, 1.0),
    (75, 0.7),
    (60, 0.9),
    (45, 1.3),
    (80, 1.1),
    (50, 1.6),
    (65, 0.8),
    (90, 0.9),
)


def photo_like(sigma: float, radius: float, tint: int = 0) -> bytes:
    """A noisy, photo-like 1024x1024 RGB PNG (no numpy): blurred noise over a soft gradient."""
    from PIL import Image, ImageFilter

    channels = [
        Image.effect_noise((SIZE, SIZE), sigma + 7 * i).filter(ImageFilter.GaussianBlur(radius))
        for i in range(3)
    ]
    noise = Image.merge("RGB", channels)
    gradient = Image.linear_gradient("L").resize((SIZE, SIZE))
    base = Image.merge(
        "RGB",
        [
            gradient,
            gradient.rotate(90 + tint),
            Image.radial_gradient("L").resize((SIZE, SIZE)),
        ],
    )
    image = Image.blend(base, noise, 0.55)
    out = io.BytesIO()
    image.save(out, "PNG")  # Pillow's default zlib level, like most encoders
    return out.getvalue()


def sample_images() -> dict[str, bytes]:
    from app.emulator.drawing import render_placeholder

    prompt = "a lighthouse on a cliff at dusk, storm clouds, oil painting"
    return {
        "emulator drawing, gpt-image-1": render_placeholder(
            prompt, 0, 1, f"{SIZE}x{SIZE}", model="gpt-image-1"
        ),
        "emulator drawing, transparent (RGBA)": render_placeholder(
            prompt, 0, 1, f"{SIZE}x{SIZE}", model="gpt-image-1", transparent=True
        ),
        "photo-like noise + blur": photo_like(*PHOTO_PARAMS[0]),
    }


def stage_timings(data: bytes, repeats: int) -> dict[str, Any]:
    """Each stage of make_thumbnails on its own, as storage does it."""
    from PIL import Image

    from app.storage import THUMBNAIL_LARGE_SIZE, THUMBNAIL_SIZE, _webp

    def decode() -> Image.Image:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")

    decoded = decode()

    def large() -> Image.Image:
        copy = decoded.copy()
        copy.thumbnail((THUMBNAIL_LARGE_SIZE, THUMBNAIL_LARGE_SIZE), Image.Resampling.LANCZOS)
        return copy

    large_image = large()

    def small() -> Image.Image:
        copy = large_image.copy()
        copy.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
        return copy

    small_image = small()
    cases: dict[str, Callable[[], Any]] = {
        "decode PNG + convert RGB": decode,
        "resize 1024 -> 512 (LANCZOS)": large,
        "resize 512 -> 256 (LANCZOS)": small,
        "WebP 512 px (q80, method 4)": lambda: _webp(large_image),
        "WebP 256 px (q80, method 4)": lambda: _webp(small_image),
        "  alt: WebP 512 px, method 2": lambda: _save_webp(large_image, 2),
        "  alt: WebP 512 px, method 0": lambda: _save_webp(large_image, 0),
        "  alt: reduce(2) 1024 -> 512 (box)": lambda: decoded.reduce(2),
    }
    return measure_side_by_side(cases, warmups=2, repeats=repeats)


def _save_webp(image: Any, method: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "WEBP", quality=80, method=method)
    return out.getvalue()


# --- memory of one 10-image job, in a child process -----------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(image_dir: Path) -> None:
    """Runs in the child: store a 10-image job the way the worker does; print JSON."""
    import requests

    from app import storage
    from app.providers.base import parse_slots
    from app.providers.download import ImageFetcher

    data_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-memory-"))
    try:
        app = bench_app(
            {"ATELIER_DATA_DIR": str(data_dir), "ATELIER_WORKER_THREADS": 0}, migrate=False
        )
        storage.make_thumbnails(photo_like(10, 1.0))  # load Pillow's codecs once
        gc.collect()
        baseline_kb = _status_kb("VmRSS")
        after_imports_hwm_kb = _status_kb("VmHWM")

        # The HTTP answer as the client receives it: one JSON body, every image base64-encoded.
        files = sorted(image_dir.glob("*.png"))
        body = json.dumps(
            {
                "created": int(time.time()),
                "data": [{"b64_json": base64.b64encode(f.read_bytes()).decode()} for f in files],
            }
        ).encode()
        gc.collect()
        # Forget the peak of building the answer (not the app's work): reset VmHWM to VmRSS.
        reset = True
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            reset = False
        body_kb = _status_kb("VmRSS") - baseline_kb

        started = time.perf_counter()
        # generate(): response.json(), then the slots; the raw body goes with the response.
        slots = parse_slots(json.loads(body)["data"])
        del body
        fetcher = ImageFetcher(
            requests.Session(),
            "http://127.0.0.1/",
            read_timeout=app.config["ATELIER_HTTP_TIMEOUT_SECONDS"],
            max_image_bytes=app.config["ATELIER_MAX_IMAGE_BYTES"],
        )
        stored = []
        for slot in slots:
            stored.append(
                # Originals are stored as delivered (their parameters go to a sidecar).
                storage.Storage(data_dir).store_image(fetcher.fetch(slot))
            )
        seconds = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "baseline_kb": baseline_kb,
                    "after_imports_hwm_kb": after_imports_hwm_kb,
                    "answer_kb": body_kb,
                    "peak_kb": _status_kb("VmHWM"),
                    "hwm_reset": reset,
                    "images": len(stored),
                    "image_bytes": sum(s.bytes for s in stored),
                    "seconds": seconds,
                }
            )
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def job_memory(image_dir: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.images", "--memory-child", str(image_dir)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if result.returncode != 0:
        raise SystemExit(f"the memory child failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the run -------------------------------------------------------------------------------


def run(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.memory_child:
        memory_child(Path(options.memory_child))
        return 0
    run_started = time.perf_counter_ns()
    print(
        f"Atelier image benchmark: {SIZE}x{SIZE} PNGs, {options.repeats} runs per case; "
        f"memory of a {JOB_IMAGES}-image job"
    )
    print_machine()
    print()

    from app.storage import make_thumbnails

    samples = sample_images()
    thumbs = measure_side_by_side(
        {name: (lambda data=data: make_thumbnails(data)) for name, data in samples.items()},
        warmups=3,
        repeats=options.repeats,
    )
    stages = stage_timings(samples["photo-like noise + blur"], options.repeats)

    image_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-images-"))
    try:
        sizes = []
        for index, params in enumerate(PHOTO_PARAMS[:JOB_IMAGES]):
            data = photo_like(*params, tint=index * 7)
            sizes.append(len(data))
            (image_dir / f"{index:02}.png").write_bytes(data)
        memory = job_memory(image_dir)
    finally:
        shutil.rmtree(image_dir, ignore_errors=True)

    rows, missed = [], []
    for name, stats in thumbs.items():
        ok = stats.median < THUMBNAILS_MS
        if not ok:
            missed.append(f"thumbnails ({name}): median {stats.median:.1f} ms")
        rows.append(
            [
                f"1. make_thumbnails: {name}, {fmt_bytes(len(samples[name]))}",
                fmt_ms(stats.median),
                fmt_ms(stats.p95),
                f"median < {THUMBNAILS_MS:.0f} ms",
                mark(ok),
            ]
        )
    delta_mb = (memory["peak_kb"] - memory["baseline_kb"]) / 1024
    ok = delta_mb < JOB_MEMORY_MB
    if not ok:
        missed.append(f"job memory: {delta_mb:.0f} MB")
    rows.append(
        [
            f"2. Peak RSS storing a {memory['images']}-image job "
            f"({fmt_bytes(min(sizes))} - {fmt_bytes(max(sizes))} PNGs, "
            f"{fmt_bytes(sum(sizes))} in all), over the RSS after imports",
            f"{delta_mb:.1f} MB",
            "",
            f"< {JOB_MEMORY_MB:.0f} MB",
            mark(ok),
        ]
    )
    print_table(["Measurement", "Median ms", "p95 ms", "Target", "Result"], rows, align="lrrll")
    print("Targets missed: " + ("; ".join(missed) if missed else "none"))

    print("\nStages of make_thumbnails on the photo-like image (each alone; 'alt' = not used):")
    print_table(
        ["Stage", "Median ms", "p95 ms"],
        [[name, fmt_ms(s.median), fmt_ms(s.p95)] for name, s in stages.items()],
        align="lrr",
    )
    print(
        f"\nMemory child: RSS after imports {memory['baseline_kb'] / 1024:.1f} MB (peak so far "
        f"{memory['after_imports_hwm_kb'] / 1024:.1f} MB); the JSON answer held "
        f"{memory['answer_kb'] / 1024:.1f} MB; peak {memory['peak_kb'] / 1024:.1f} MB; "
        f"{memory['images']} images stored in {memory['seconds']:.2f} s"
        + ("" if memory["hwm_reset"] else " (VmHWM could not be reset: peak includes set-up)")
    )
    print(f"\nTotal run time: {elapsed_ms(run_started) / 1000:.1f} s")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per case")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
