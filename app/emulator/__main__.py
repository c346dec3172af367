"""`python -m app.emulator`: run the emulator as its own process.

Owns the command line. Tests spawn the emulator this way so it can outlive an Atelier process
they kill. Prints exactly one line, `EMULATOR_URL=<base url>`, to stdout once listening, and
exits with status 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import fields
from types import FrameType

from .config import (
    DEFAULT_DEPLOYMENTS,
    DEFAULT_OVERSIZED_BYTES,
    DEFAULT_RATE_LIMIT_RETRY_SECONDS,
    EmulatorConfig,
)
from .models import MODELS
from .server import EmulatorServer


class _StopRequested(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested


def _deployment(value: str) -> tuple[str, str]:
    """`NAME=MODEL` -> (name, model), for --deployment."""
    name, separator, model = value.partition("=")
    if not separator or not name or not model:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL, got {value!r}")
    if model not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
    return name, model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.emulator", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", required=True, help="the key clients must send as api-key")
    parser.add_argument(
        "--latency", type=float, default=3.0, help="seconds until an operation finishes"
    )
    parser.add_argument(
        "--poll-interval", type=int, default=1, help="seconds advertised in retry-after"
    )
    parser.add_argument("--state-file", help="keep operations in this JSON file across restarts")
    parser.add_argument(
        "--signing-secret", help="HMAC secret for image URLs (default: saved or random)"
    )
    parser.add_argument(
        "--public-url", help="base URL clients reach the emulator at, if not this one"
    )
    parser.add_argument(
        "--deployment",
        action="append",
        type=_deployment,
        metavar="NAME=MODEL",
        help="an Azure deployment and the model it serves; repeatable, replaces the defaults "
        + " ".join(f"{name}={model}" for name, model in DEFAULT_DEPLOYMENTS.items()),
    )
    parser.add_argument(
        "--openai-api-key", help="the bearer key /v1/images/generations accepts (default: api key)"
    )
    parser.add_argument(
        "--hang-seconds",
        type=float,
        default=30.0,
        help="how long a synchronous [hang] request waits before answering 500",
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=5.0,
        help="how long the first poll of a [poll-slow] operation waits before answering",
    )
    parser.add_argument(
        "--oversized-bytes",
        type=int,
        default=DEFAULT_OVERSIZED_BYTES,
        help="an [image-oversized] download streams more than this many bytes",
    )
    parser.add_argument(
        "--rate-limit-retry-seconds",
        type=float,
        default=DEFAULT_RATE_LIMIT_RETRY_SECONDS,
        help="the wait a 429 asks for, in retry-after and retry-after-ms alike",
    )
    parser.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    # Every EmulatorConfig field but `deployments` has an option of the same name (a field
    # added without one fails here, loudly); --deployment is repeatable and becomes the mapping.
    options = {
        f.name: getattr(args, f.name) for f in fields(EmulatorConfig) if f.name != "deployments"
    }
    deployments = dict(args.deployment) if args.deployment else dict(DEFAULT_DEPLOYMENTS)
    return EmulatorConfig(**options, deployments=deployments)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        # E.g. a deployment name Azure would not allow: refuse like a bad argument would.
        print(f"python -m app.emulator: error: {exc}", file=sys.stderr)
        return 2
    # Handlers first, so a signal arriving during start-up still ends in a clean stop.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = EmulatorServer(config, args.host, args.port, quiet=not args.verbose)
    try:
        server.start()
        # The parent process waits for this line; flush, or it sits in a pipe buffer.
        print(f"EMULATOR_URL={server.url}", flush=True)
        while True:
            time.sleep(3600)
    except _StopRequested:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
