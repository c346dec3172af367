# Atelier container: slim Python, dependencies in their own cached layer, non-root, data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ATELIER_DATA_DIR=/data

WORKDIR /srv/atelier
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY app ./app
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations

RUN useradd --system --uid 10001 --home-dir /srv/atelier atelier \
    && mkdir -p /data && chown atelier /data
USER atelier
VOLUME ["/data"]
EXPOSE 5000

HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=2)"]

# Migrate, then serve with the background worker. There is no sign-in yet: publish this port
# only to machines you trust.
CMD ["sh", "-c", "flask --app app db upgrade && exec python -m app --host 0.0.0.0 --port 5000"]
