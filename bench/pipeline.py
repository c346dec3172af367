"""The pipeline benchmark: what Atelier adds on top of the provider's own latency.

Runs the real app (schema from the migrations, real worker threads from
`worker.start_background`) against the built-in emulator served as its own process (so its
image drawing does not share the app's GIL), over loopback:

1. Throughput: `--jobs` gpt-image-1 jobs (1024x1024, n=1) on the synchronous deployment route,
   submitted through the JSON API with Flask's test client, with ATELIER_WORKER_THREADS = C for
   each C of `--threads`; wall time from the first submission until every job is final, against
   the ideal ceil(jobs / C) x L. Target < 1.10x.
2. Single-job overhead: C = 1, one job at a time; submit-to-final minus L. Target median < 100 ms.
3. Asynchronous DALL-E 2 API (retry-after P): how long after the operation completed
   (created + L, from the emulator's state file) the job was final. Target max < P.
4. Object storage: runs 1 and 2 again with the images in Azure Blob Storage
   (ATELIER_STORAGE_URL=az://..., on an Azurite this benchmark starts from .node/, `make
   azurite`), each right after the same run on the data folder, so both see the same machine.
   Target: the throughput wall time within 1.2x of the data folder's at every C (issue #17).
   The single-job overhead on Azurite is printed beside the data folder's.

The CPU seconds of the app process, the emulator process and Azurite during each run are
printed, so a miss caused by 2 saturated cores shows as such.

    python -m bench.pipeline                      # 200 jobs, C = 8 and 20, L = 2 s
    python -m bench.pipeline --jobs 40 --threads 20 --single 5 --async-jobs 5   # quick
    python -m bench.pipeline --storage local      # the data folder only (no Azurite)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.runner import (
    Azurite,
    Stats,
    bench_app,
    elapsed_ms,
    fmt_ms,
    mark,
    print_machine,
    print_table,
    process_cpu_seconds,
    ratio,
    stop_process,
)

DEPLOYMENT = "gpt-image-1"
SIZE = "1024x1024"
ASYNC_SIZE = "1024x1024"
FINAL = ("succeeded", "failed", "canceled")

# Targets from the issue.
THROUGHPUT_RATIO = 1.10
SINGLE_OVERHEAD_MS = 100.0
STORAGE_RATIO = 1.20  # object storage's throughput wall time vs the data folder's


# --- the emulator and the app --------------------------------------------------------------


class Emulator:
    """`python -m app.emulator` as a child process."""

    def __init__(self, latency: float, poll_interval: int, state_file: Path | None = None) -> None:
        self.key = "bench-" + secrets.token_hex(8)
        self.state_file = state_file
        command = [
            sys.executable,
            "-m",
            "app.emulator",
            "--port",
            "0",
            "--api-key",
            self.key,
            "--latency",
            str(latency),
            "--poll-interval",
            str(poll_interval),
            "--deployment",
            f"{DEPLOYMENT}={DEPLOYMENT}",
        ]
        if state_file is not None:
            command += ["--state-file", str(state_file)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("EMULATOR_URL="):
            self.stop()
            raise SystemExit(f"the emulator did not start: {line!r}")
        self.url = line.removeprefix("EMULATOR_URL=")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the emulator process so far."""
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process, grace=10)


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class PoolFullCounter(logging.Filter):
    """Counts (and hides) urllib3's "Connection pool is full, discarding connection" warnings:
    each is a connection to the provider opened for one request and thrown away."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "Connection pool is full" in record.getMessage():
            self.count += 1
            return False
        return True


POOL_FULL = PoolFullCounter()
logging.getLogger("urllib3.connectionpool").addFilter(POOL_FULL)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_app(
    data_dir: Path,
    emulator: Emulator,
    threads: int,
    asynchronous: bool,
    storage: Mapping[str, str] | None = None,
) -> Any:
    """The real app on a fresh data folder, pointed at the emulator as if it were Azure; its
    images in the data folder, or where `storage` (ATELIER_STORAGE_URL and its credentials)
    says."""
    config: dict[str, Any] = {
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_WORKER_THREADS": threads,
        "AZURE_OPENAI_ENDPOINT": emulator.url,
        "AZURE_OPENAI_API_KEY": emulator.key,
        **(storage or {}),
    }
    if asynchronous:
        config["AZURE_OPENAI_ASYNC_DALLE2"] = "on"
    else:
        config["AZURE_OPENAI_DEPLOYMENT"] = f"{DEPLOYMENT}={DEPLOYMENT}"
        config["AZURE_OPENAI_ASYNC_DALLE2"] = "off"
    # As in production, where the configuration comes from the environment: the provider
    # sessions size their connection pools from it (app.providers.download.pooled_session).
    os.environ["ATELIER_WORKER_THREADS"] = str(threads)
    return bench_app(config)


def provider_id(app: Any) -> str:
    return app.config["ATELIER_TARGETS"][0].id


def submit(client: Any, provider: str, prompt: str, size: str) -> int:
    response = client.post(
        "/api/jobs", json={"prompt": prompt, "provider": provider, "size": size, "n": 1}
    )
    if response.status_code not in (200, 201, 202):
        raise SystemExit(f"POST /api/jobs answered {response.status_code}: {response.get_data()}")
    return response.get_json()["id"]


@dataclass
class JobTimes:
    id: int
    status: str
    error_code: str | None
    created: float  # Unix seconds
    started: float | None
    finished: float | None
    operation_url: str | None


def to_unix(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def job_times(app: Any, ids: Sequence[int]) -> list[JobTimes]:
    from sqlalchemy import select

    from app.models import Job, db

    with app.app_context():
        rows = db.session.execute(
            select(
                Job.id,
                Job.status,
                Job.error_code,
                Job.created_at,
                Job.started_at,
                Job.finished_at,
                Job.operation_url,
            ).where(Job.id.in_(list(ids)))
        ).all()
        db.session.remove()
    return [
        JobTimes(r[0], r[1], r[2], to_unix(r[3]), to_unix(r[4]), to_unix(r[5]), r[6])
        for r in sorted(rows)
    ]


def wait_final(app: Any, ids: Sequence[int], timeout: float, interval: float) -> bool:
    """Poll the database (cheaply) until every job is final; False on timeout."""
    from sqlalchemy import func, select

    from app.models import Job, db

    deadline = time.monotonic() + timeout
    wanted = list(ids)
    while time.monotonic() < deadline:
        with app.app_context():
            done = db.session.scalar(
                select(func.count()).where(Job.id.in_(wanted), Job.status.in_(FINAL))
            )
            db.session.remove()
        if done == len(wanted):
            return True
        time.sleep(interval)
    return False


class Running:
    """An app with its worker threads started on a fresh data folder (and a fresh Azurite
    container when one is given); stopped on exit."""

    def __init__(
        self,
        emulator: Emulator,
        threads: int,
        asynchronous: bool = False,
        azurite: Azurite | None = None,
    ) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-pipeline-"))
        self.azurite = azurite
        self.storage = azurite.container() if azurite is not None else None
        self.app = build_app(self.data_dir, emulator, threads, asynchronous, self.storage)
        self.client = self.app.test_client()
        self.provider = provider_id(self.app)
        self.worker: Any = None

    def __enter__(self) -> Running:
        from app.worker import start_background

        self.worker = start_background(self.app)
        return self

    def __exit__(self, *exc: object) -> None:
        from app.models import db

        if self.worker is not None:
            self.worker.stop()
        with self.app.app_context():
            db.session.remove()
            db.engine.dispose()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.azurite is not None and self.storage is not None:
            self.azurite.drop(self.storage)


# --- the measurements ----------------------------------------------------------------------


@dataclass
class Throughput:
    threads: int
    jobs: int
    latency: float
    wall: float | None  # seconds, first submission -> last finished_at
    submit_seconds: float
    succeeded: int
    failures: dict[str, int]
    per_job: Stats | None  # finished - created, ms
    claim_delay: Stats | None  # started - created, ms
    app_cpu: float
    emulator_cpu: float
    machine_cpu: float  # every process's, including other programs running meanwhile
    pool_full: int  # connections discarded because the client's pool was full
    storage: str = "folder"  # "folder" or "azurite"
    storage_cpu: float = 0.0  # Azurite's, when the images went there

    @property
    def ideal(self) -> float:
        return math.ceil(self.jobs / self.threads) * self.latency


def throughput(
    emulator: Emulator,
    jobs: int,
    threads: int,
    latency: float,
    azurite: Azurite | None = None,
) -> Throughput:
    """`jobs` jobs at `threads` worker threads, images in the data folder or on `azurite`."""
    with Running(emulator, threads, azurite=azurite) as run:
        # One untimed job first: connections, templates, first-query costs.
        warm = submit(run.client, run.provider, "warm-up: a quiet harbour", SIZE)
        wait_final(run.app, [warm], 60, 0.05)
        cpu_app, cpu_emulator = own_cpu_seconds(), emulator.cpu_seconds()
        cpu_machine = machine_busy_seconds()
        cpu_storage = azurite.cpu_seconds() if azurite is not None else 0.0
        pool_full = POOL_FULL.count
        started = time.time()
        ids = [
            submit(
                run.client, run.provider, f"bench job {i}: a lighthouse in fog, oil painting", SIZE
            )
            for i in range(jobs)
        ]
        submit_seconds = time.time() - started
        ideal = math.ceil(jobs / threads) * latency
        finished = wait_final(run.app, ids, timeout=ideal * 3 + 60, interval=0.1)
        app_cpu = own_cpu_seconds() - cpu_app
        emulator_cpu = emulator.cpu_seconds() - cpu_emulator
        machine_cpu = machine_busy_seconds() - cpu_machine
        storage_cpu = azurite.cpu_seconds() - cpu_storage if azurite is not None else 0.0
        pool_full = POOL_FULL.count - pool_full
        times = job_times(run.app, ids)
    ends = [t.finished for t in times if t.finished is not None]
    failures: dict[str, int] = {}
    for t in times:
        if t.status != "succeeded":
            key = f"{t.status}:{t.error_code}"
            failures[key] = failures.get(key, 0) + 1
    per_job = [(t.finished - t.created) * 1000 for t in times if t.finished is not None]
    claims = [(t.started - t.created) * 1000 for t in times if t.started is not None]
    return Throughput(
        threads=threads,
        jobs=jobs,
        latency=latency,
        wall=(max(ends) - started) if finished and ends else None,
        submit_seconds=submit_seconds,
        succeeded=sum(t.status == "succeeded" for t in times),
        failures=failures,
        per_job=Stats(tuple(per_job)) if per_job else None,
        claim_delay=Stats(tuple(claims)) if claims else None,
        app_cpu=app_cpu,
        emulator_cpu=emulator_cpu,
        machine_cpu=machine_cpu,
        pool_full=pool_full,
        storage="azurite" if azurite is not None else "folder",
        storage_cpu=storage_cpu,
    )


@dataclass
class Single:
    overhead: Stats | None  # submit-to-final minus L, ms
    claim_delay: Stats | None  # created -> started, ms
    after_generation: Stats | None  # finished - started - L, ms (store + bookkeeping)
    failures: int


def single_jobs(
    emulator: Emulator, count: int, latency: float, azurite: Azurite | None = None
) -> Single:
    overhead, claims, after, failures = [], [], [], 0
    with Running(emulator, 1, azurite=azurite) as run:
        for index in range(count + 2):  # the first two are warm-ups
            before = time.time()
            job_id = submit(
                run.client, run.provider, f"single job {index}: a red fox in snow", SIZE
            )
            wait_final(run.app, [job_id], latency * 5 + 30, 0.01)
            (times,) = job_times(run.app, [job_id])
            if index < 2:
                continue
            if times.status != "succeeded" or times.finished is None:
                failures += 1
                continue
            overhead.append((times.finished - before - latency) * 1000)
            if times.started is not None:
                claims.append((times.started - times.created) * 1000)
                after.append((times.finished - times.started - latency) * 1000)
    return Single(
        Stats(tuple(overhead)) if overhead else None,
        Stats(tuple(claims)) if claims else None,
        Stats(tuple(after)) if after else None,
        failures,
    )


@dataclass
class Async:
    lag: Stats | None  # finished - (operation created + L), ms
    matched: int
    failures: dict[str, int]
    poll_interval: int


def async_jobs(latency: float, poll_interval: int, count: int, spacing: float) -> Async:
    state_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-emulator-"))
    state_file = state_dir / "operations.json"
    emulator = Emulator(latency, poll_interval, state_file)
    try:
        with Running(emulator, 4, asynchronous=True) as run:
            warm = submit(run.client, run.provider, "warm-up: a quiet harbour", ASYNC_SIZE)
            wait_final(run.app, [warm], latency * 5 + 30, 0.05)
            ids = []
            for index in range(count):
                ids.append(
                    submit(run.client, run.provider, f"async job {index}: a paper kite", ASYNC_SIZE)
                )
                time.sleep(spacing)
            wait_final(run.app, ids, latency * 5 + count * spacing + 60, 0.05)
            times = job_times(run.app, ids)
    finally:
        emulator.stop()
    operations = json.loads(state_file.read_text())["operations"]
    shutil.rmtree(state_dir, ignore_errors=True)
    completes = {op["id"]: op["created_at"] + op["latency"] for op in operations}
    lags, failures = [], {}
    for t in times:
        if t.status != "succeeded":
            key = f"{t.status}:{t.error_code}"
            failures[key] = failures.get(key, 0) + 1
            continue
        operation_id = urlsplit(t.operation_url or "").path.rstrip("/").rsplit("/", 1)[-1]
        if operation_id in completes and t.finished is not None:
            lags.append((t.finished - completes[operation_id]) * 1000)
    return Async(Stats(tuple(lags)) if lags else None, len(lags), failures, poll_interval)


# --- the run -------------------------------------------------------------------------------


def run(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    run_started = time.perf_counter_ns()
    print(
        f"Atelier pipeline benchmark: emulator latency L = {options.latency:g} s, "
        f"{options.jobs} jobs per throughput run, C = {', '.join(map(str, options.threads))}"
    )
    print_machine()
    azurite: Azurite | None = None
    if options.storage == "both":
        if Azurite.available():
            azurite = Azurite()
            print(f"Object storage: Azurite on 127.0.0.1:{azurite.port} (in memory), az://")
        else:
            print("Object storage: not measured, Azurite is not installed (run `make azurite`).")
    print()

    emulator = Emulator(options.latency, options.poll_interval)
    results: list[Throughput] = []
    az_results: list[Throughput] = []
    az_single: Single | None = None
    try:
        # Side by side: each run on Azurite right after the same run on the data folder.
        for threads in options.threads:
            results.append(throughput(emulator, options.jobs, threads, options.latency))
            if azurite is not None:
                az_results.append(
                    throughput(emulator, options.jobs, threads, options.latency, azurite)
                )
        single = single_jobs(emulator, options.single, options.latency)
        if azurite is not None:
            az_single = single_jobs(emulator, options.single, options.latency, azurite)
    finally:
        emulator.stop()
        if azurite is not None:
            azurite.stop()
    async_result = async_jobs(
        options.latency, options.poll_interval, options.async_jobs, options.async_spacing
    )

    rows, missed = [], []
    for result in results:
        ok = None if result.wall is None else result.wall / result.ideal < THROUGHPUT_RATIO
        if not ok:
            missed.append(f"throughput C={result.threads}")
        rows.append(
            [
                f"1. {result.jobs} jobs, C={result.threads}: wall / ideal {result.ideal:.0f} s",
                f"{result.wall:.2f} s" if result.wall else "timeout",
                f"{ratio(result.wall, result.ideal):.3f}x" if result.wall else "-",
                f"< {THROUGHPUT_RATIO:.2f}x",
                mark(ok),
            ]
        )
    ok = None if single.overhead is None else single.overhead.median < SINGLE_OVERHEAD_MS
    if not ok:
        missed.append("single-job overhead")
    rows.append(
        [
            f"2. Single job (C=1) submit-to-final - L, {options.single} jobs",
            f"median {fmt_ms(single.overhead.median if single.overhead else None)} ms",
            f"p95 {fmt_ms(single.overhead.p95 if single.overhead else None)} ms",
            f"median < {SINGLE_OVERHEAD_MS:.0f} ms",
            mark(ok),
        ]
    )
    lag = async_result.lag
    limit_ms = async_result.poll_interval * 1000
    ok = None if lag is None else max(lag.samples) < limit_ms
    if not ok:
        missed.append("async completion noticed")
    rows.append(
        [
            f"3. Async: finished - (created + L), {async_result.matched} jobs, "
            f"P = {async_result.poll_interval} s",
            f"median {fmt_ms(lag.median if lag else None)} ms",
            f"max {fmt_ms(max(lag.samples) if lag else None)} ms",
            f"max < {limit_ms:.0f} ms",
            mark(ok),
        ]
    )
    for local, remote in zip(results if az_results else [], az_results, strict=True):
        ok = None
        if local.wall is not None and remote.wall is not None:
            ok = remote.wall / local.wall <= STORAGE_RATIO
        if not ok:
            missed.append(f"Azurite vs data folder C={remote.threads}")
        rows.append(
            [
                f"4. Azurite vs data folder, {remote.jobs} jobs, C={remote.threads}: wall",
                f"{_seconds(remote.wall)} / {_seconds(local.wall)}",
                f"{ratio(remote.wall, local.wall):.3f}x" if remote.wall and local.wall else "-",
                f"<= {STORAGE_RATIO:.2f}x",
                mark(ok),
            ]
        )
    if az_single is not None:
        extra = (
            az_single.overhead.median - single.overhead.median
            if az_single.overhead and single.overhead
            else None
        )
        rows.append(
            [
                "5. Single job (C=1) submit-to-final - L on Azurite / data folder",
                f"median {fmt_ms(az_single.overhead.median if az_single.overhead else None)}"
                f" / {fmt_ms(single.overhead.median if single.overhead else None)} ms",
                f"+{fmt_ms(extra)} ms per job",
                "(information)",
                mark(None),
            ]
        )
    print_table(["Measurement", "Value", "Ratio / spread", "Target", "Result"], rows)
    print("Targets missed: " + (", ".join(missed) if missed else "none"))

    print("\nThroughput runs in detail (per job = finished - created; claim = started - created):")
    detail = []
    for result in sorted([*results, *az_results], key=lambda r: (r.threads, r.storage != "folder")):
        cores = len(os.sched_getaffinity(0))
        wall = result.wall or float("nan")
        ours = result.app_cpu + result.emulator_cpu + result.storage_cpu
        detail.append(
            [
                f"C={result.threads} {result.storage}",
                f"{result.succeeded}/{result.jobs}",
                f"{result.submit_seconds:.2f}",
                fmt_ms(result.per_job.median if result.per_job else None),
                fmt_ms(result.per_job.p95 if result.per_job else None),
                fmt_ms(result.claim_delay.median if result.claim_delay else None),
                fmt_ms(result.claim_delay.p95 if result.claim_delay else None),
                f"{result.app_cpu:.1f}",
                f"{result.emulator_cpu:.1f}",
                f"{result.storage_cpu:.1f}",
                f"{ours / (wall * cores) * 100:.0f}%",
                f"{max(0.0, result.machine_cpu - ours):.1f}",
                result.pool_full,
                ", ".join(f"{k} x{v}" for k, v in result.failures.items()) or "-",
            ]
        )
    print_table(
        [
            "Run",
            "OK",
            "Submit s",
            "Per job med ms",
            "p95",
            "Claim med ms",
            "p95",
            "App CPU s",
            "Emulator CPU s",
            "Azurite CPU s",
            "CPU use",
            "Others' CPU s",
            "Pool full",
            "Failures",
        ],
        detail,
        align="lrrrrrrrrrrrrl",
    )
    print(
        "CPU use = (app + emulator + Azurite CPU seconds) / (wall x usable cores), measured from "
        "the first "
        "submission to the last job's end.\nOthers' CPU s: what other programs on the machine "
        "used meanwhile (non-zero means the numbers are disturbed).\nPool full: urllib3 "
        "'Connection pool is full, discarding connection' warnings (requests' default pool "
        "keeps 10 connections per host)."
    )
    for label, one in (("", single), (" on Azurite", az_single)):
        if one is not None and one.claim_delay and one.after_generation:
            print(
                f"\nSingle job breakdown{label} (median / p95 ms): claim delay "
                f"{one.claim_delay.median:.1f} / {one.claim_delay.p95:.1f}; started -> final "
                f"minus L {one.after_generation.median:.1f} / {one.after_generation.p95:.1f}"
                + (f"; {one.failures} failed" if one.failures else "")
            )
    if async_result.failures:
        print(f"Async failures: {async_result.failures}")
    if lag:
        print(
            "Async lags (ms, sorted): " + ", ".join(f"{value:.0f}" for value in sorted(lag.samples))
        )
    print(f"\nTotal run time: {elapsed_ms(run_started) / 1000:.1f} s")
    return 0


def _seconds(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "timeout"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=200, help="jobs per throughput run")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[8, 20], help="worker threads C per run"
    )
    parser.add_argument("--latency", type=float, default=2.0, help="emulator latency L, seconds")
    parser.add_argument(
        "--poll-interval", type=int, default=1, help="emulator retry-after P, whole seconds"
    )
    parser.add_argument("--single", type=int, default=20, help="jobs in the single-job run")
    parser.add_argument("--async-jobs", type=int, default=20, help="jobs on the async API")
    parser.add_argument(
        "--async-spacing", type=float, default=0.25, help="seconds between async submissions"
    )
    parser.add_argument(
        "--storage",
        choices=("both", "local"),
        default="both",
        help="both: runs 1 and 2 on the data folder and again on Azurite, side by side "
        "(default); local: the data folder only",
    )
    return parser.parse_args(argv)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
