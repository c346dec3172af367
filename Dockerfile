# Atelier container: slim Python, dependencies in their own cached layer, non-root, data volume.
# gunicorn's master migrates the database (once, under a lock) and then forks the web workers;
# see app/gunicorn_conf.py.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ATELIER_DATA_DIR=/data \
    ATELIER_BIND=0.0.0.0:5000

WORKDIR /srv/atelier
# --build-arg REQUIREMENTS=requirements-azure.txt adds azure-identity (Entra ID, managed identity).
ARG REQUIREMENTS=requirements.txt
COPY requirements.txt requirements-azure.txt ./
RUN pip install --no-cache-dir -r "${REQUIREMENTS}"

COPY app ./app
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations

RUN useradd --system --uid 10001 --home-dir /srv/atelier atelier \
    && mkdir -p /data && chown 10001 /data
USER 10001
VOLUME ["/data"]
EXPOSE 5000

# Probes the port ATELIER_BIND names, so overriding the bind keeps the check right.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ['ATELIER_BIND'].rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]

# Sign-in is on (ATELIER_AUTH): the first account comes from ATELIER_ADMIN_PASSWORD or the
# one-time setup link printed at start. Plain HTTP carries passwords and session cookies in
# clear: publish this port behind a TLS proxy (with ATELIER_HTTPS=on) or to trusted machines.
CMD ["gunicorn", "-c", "python:app.gunicorn_conf"]
