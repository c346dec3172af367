"""`python -m app`: serve Atelier with its background worker (what `make run` starts).

Brings the database schema to head (as gunicorn's master does), starts the worker threads (and
the built-in emulator when Azure is not configured), serves on 127.0.0.1:5000 by default, and
on Ctrl-C or SIGTERM stops claiming jobs and lets each thread finish its current step before
exiting.
"""

from __future__ import annotations

import argparse
import signal
import sys

from werkzeug.serving import make_server

from app import create_app, schema, security, setup
from app.config import ConfigError
from app.logs import configure_logging
from app.worker import start_background


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        app = create_app()
        # A data folder never migrated would serve 500s ("no such table: jobs") and the worker
        # would log a traceback every second.
        schema.upgrade_database(app)
        # Alembic's env.py applies migrations/alembic.ini's logging: put Atelier's back.
        configure_logging()
        setup.prepare_serving(app, [args.host], f"http://{_url_host(args.host)}:{args.port}/")
        security.serve_on(app, [args.host], announce=True)
    except ConfigError as error:
        print(f"Atelier cannot start: {error}", file=sys.stderr)
        return 2
    worker = start_background(app)
    server = make_server(args.host, args.port, app, threaded=True)

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"Atelier is serving on http://{args.host}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if worker is not None:
            worker.stop()
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    sys.exit(main())
