"""Benchmarks: programs that print numbers next to their targets (`make bench`).

They are not timed tests and never fail on a number: timings on a shared machine are too noisy
to gate a build on. `bench.runner` holds what every benchmark shares; each other module is one
benchmark, run with `python -m bench.<name>`.
"""

import os

# Every benchmark measures the app in open mode (no sign-in); the servers they start inherit
# this environment. Apps built in-process read no environment: bench.runner.bench_app says so.
os.environ["ATELIER_AUTH"] = "off"
