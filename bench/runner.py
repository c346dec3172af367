"""What every benchmark shares: timing, median and p95, ratios, tables, the machine description,
and Azurite (`Azurite`: Azure Blob Storage in memory on loopback, for runs on object storage).

Cases that are compared with each other are measured side by side (round robin, one request of
each in turn), so a noisy neighbour slows them all alike and their ratio stays meaningful.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASS, FAIL, NOT_MEASURED = "PASS", "FAIL", "n/a"


@dataclass(frozen=True)
class Stats:
    """Timings of one case, in milliseconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 0.95)

    @property
    def count(self) -> int:
        return len(self.samples)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `fraction` of them at or below."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def elapsed_ms(started_ns: int) -> float:
    return (time.perf_counter_ns() - started_ns) / 1e6


def time_call(call: Callable[[], Any]) -> tuple[Any, float]:
    """Run `call` once; return its result and the wall time in milliseconds."""
    started = time.perf_counter_ns()
    result = call()
    return result, elapsed_ms(started)


def measure(call: Callable[[], Any], *, warmups: int, repeats: int) -> Stats:
    return measure_side_by_side({"case": call}, warmups=warmups, repeats=repeats)["case"]


def measure_side_by_side(
    cases: Mapping[str, Callable[[], Any]], *, warmups: int, repeats: int
) -> dict[str, Stats]:
    """Time every case `repeats` times, one of each in turn, after `warmups` untimed rounds."""
    for _ in range(warmups):
        for call in cases.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, call in cases.items():
            samples[name].append(time_call(call)[1])
    return {name: Stats(tuple(values)) for name, values in samples.items()}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.inf


def mark(ok: bool | None) -> str:
    """PASS or FAIL for a target, n/a when it could not be measured."""
    if ok is None:
        return NOT_MEASURED
    return PASS if ok else FAIL


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    if count >= 1_000_000:
        return f"{count / 1_000_000:.2f} MB"
    return f"{count / 1000:.1f} kB"


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> str:
    """A plain-text table; `align` has one letter per column, l or r (default: all left)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    align = (align or "").ljust(len(headers), "l")

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if align[i] == "r" else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(list(headers)), rule, *(line(row) for row in cells)])


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> None:
    print(format_table(headers, rows, align))


def machine_description() -> list[tuple[str, str]]:
    """CPU model, cores, memory, OS, Python and SQLite versions, as (label, value) pairs."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()} logical" + (f" ({usable} usable)" if usable else "")
    return [
        ("CPU", _cpu_model()),
        ("Cores", cores),
        ("Memory", _memory()),
        ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite3.sqlite_version),
    ]


def print_machine() -> None:
    for label, value in machine_description():
        print(f"{label + ':':<8} {value}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


# Every in-process benchmark app: errors propagate (TESTING), open mode like the bare route and
# the servers (bench/__init__.py), and the cost limits out of the way, so a run of 200 jobs at
# C threads keeps C jobs in flight (the default cap is 16) and is never refused by the daily
# quota. create_app(config) reads no environment, so this is the one place that says so.
BENCH_SETTINGS = {
    "TESTING": True,
    "ATELIER_AUTH": "off",
    "ATELIER_MAX_CONCURRENT_JOBS": 0,
    "ATELIER_DAILY_IMAGE_QUOTA": 0,
}


def bench_app(config: Mapping[str, Any], *, migrate: bool = True) -> Any:
    """The real app with BENCH_SETTINGS and `config`; its schema made by the real migrations."""
    import logging

    from flask_migrate import upgrade

    from app import create_app

    app = create_app({**BENCH_SETTINGS, **config})
    if migrate:
        logging.disable(logging.INFO)  # alembic's "Running upgrade" lines
        try:
            with app.app_context():
                upgrade()
        finally:
            logging.disable(logging.NOTSET)
    return app


# --- Azurite: Azure Blob Storage on loopback, for the benchmarks that compare storage ----------

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / ".node" / "node_modules" / ".bin" / "azurite-blob"  # `make azurite`
# Azurite's fixed development account (documented by Microsoft, not a secret); the tests use the
# same (tests/objstore_servers.py, which does not import bench: importing bench sets open mode).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(
    process: subprocess.Popen, grace: float, sig: signal.Signals = signal.SIGTERM
) -> None:
    """Signal a child process (SIGTERM unless told), SIGKILL it when it has not ended after
    `grace` seconds."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Azurite:
    """`azurite-blob` in memory on 127.0.0.1 (from .node/), as its own process; `available()`
    says whether it is installed. `container()` makes a fresh, empty container and returns the
    app settings that point at it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.workspace = Path(tempfile.mkdtemp(prefix="atelier-bench-azurite-"))
        self.log = (self.workspace / "azurite.log").open("wb")
        self.process = subprocess.Popen(
            [str(AZURITE), "--inMemoryPersistence", "--blobHost", "127.0.0.1",
             "--blobPort", str(self.port), "--skipApiVersionCheck", "--loose"],
            cwd=self.workspace, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"Azurite did not start (log: {self.workspace}).") from None
                time.sleep(0.1)
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )
        self._containers = 0

    @staticmethod
    def available() -> bool:
        return AZURITE.exists()

    def container(self) -> dict[str, str]:
        from azure.storage.blob import BlobServiceClient

        self._containers += 1
        name = f"bench{self._containers}"
        service = BlobServiceClient.from_connection_string(self.connection_string)
        service.create_container(name)
        return {
            "ATELIER_STORAGE_URL": f"az://{name}/library",
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
        }

    def drop(self, settings: dict[str, str]) -> None:
        """Delete a container made by `container()` (Azurite keeps everything in memory)."""
        from azure.storage.blob import BlobServiceClient

        name = settings["ATELIER_STORAGE_URL"].removeprefix("az://").split("/", 1)[0]
        BlobServiceClient.from_connection_string(self.connection_string).delete_container(name)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        # It waits on kept-alive connections; there is nothing on disk to save.
        stop_process(self.process, grace=2)
        self.log.close()
        shutil.rmtree(self.workspace, ignore_errors=True)
