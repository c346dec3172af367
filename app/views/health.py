"""Operations endpoints: /healthz (liveness), /readyz (readiness) and /metrics (Prometheus).

/healthz answers as long as the process serves requests; /readyz also checks the database, the
data folder, the object store when ATELIER_STORAGE_URL names one (its answer cached for a few
seconds: app.metrics.StorageProbe) and (where this process runs them) the worker threads, so a
load balancer sends traffic only to processes that can do their work. Every part is "ok" or a
short reason, never a URL or a secret.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify

from app import metrics
from app.auth import sessions

bp = Blueprint("health", __name__)

NO_STORE = {"Cache-Control": "no-store"}


@bp.get("/healthz")
def healthz() -> tuple[str, int, dict[str, str]]:
    return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8", **NO_STORE}


@bp.get("/readyz")
def readyz() -> tuple[Response, int, dict[str, str]]:
    ready, parts = metrics.readiness()
    return jsonify(parts), 200 if ready else 503, NO_STORE


@bp.get("/metrics")
def prometheus_metrics() -> tuple[str, int, dict[str, str]]:
    # Signed-in callers only (the gate in app.views), and of those only admins: the numbers
    # describe everyone's work. Prometheus scrapes with an admin's API token.
    viewer = sessions.current_viewer()
    if viewer is None or not viewer.is_admin:
        abort(403, "Only an administrator may read the metrics.")
    return metrics.render(), 200, {"Content-Type": metrics.CONTENT_TYPE, **NO_STORE}
