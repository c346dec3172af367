# Atelier: `make run` serves the app, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run serve test test-sqlite test-postgresql lint format migrate bench clean chromium azurite

$(VENV)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

migrate: $(VENV)/.runtime
	$(BIN)/flask --app app db upgrade

run: migrate
	$(BIN)/python -m app --host $(HOST) --port $(PORT)

# Production server: gunicorn on ATELIER_BIND (default 127.0.0.1:8000); migrates on start.
serve: $(VENV)/.runtime
	$(BIN)/gunicorn -c python:app.gunicorn_conf

# The browser tests drive Debian's Chromium through Playwright (no browser download): install it
# when it is missing and apt-get can (as root, or through sudo without a password), else say how.
CHROMIUM_PACKAGES := chromium fonts-dejavu-core
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "The browser tests need Chromium: run  sudo apt-get install $(CHROMIUM_PACKAGES)" >&2; exit 1; fi; \
	  command -v apt-get >/dev/null || { echo "Install Chromium ($(CHROMIUM_PACKAGES) on Debian) and put it on PATH." >&2; exit 1; }; \
	  echo "Installing $(CHROMIUM_PACKAGES) for the browser tests..."; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CHROMIUM_PACKAGES) >/dev/null; }

# The whole suite twice: on SQLite, then on a throwaway PostgreSQL server (pgserver). Test files
# are shared out to TEST_WORKERS processes (pytest-xdist), a whole file each, so a module's
# fixtures are built once; `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile
# Azurite (Microsoft's Azure Storage emulator) for the object storage tests, from npm into .node/.
AZURITE_VERSION := 3.37.0
.node/.azurite-$(AZURITE_VERSION):
	npm install --silent --no-audit --no-fund --prefix .node azurite@$(AZURITE_VERSION)
	touch $@

azurite: .node/.azurite-$(AZURITE_VERSION)

# The two passes run side by side (most tests wait on servers, browsers and sleeps: together they
# took 15-17 minutes on 2 cores instead of 18-19.5 one after the other); make prints each pass's
# output when that pass ends, and fails if either does. `make test-sqlite` runs one of them.
test: $(VENV)/.dev chromium azurite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@echo "Running the suite on SQLite and on PostgreSQL side by side; each prints when it ends."
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgresql

test-sqlite test-postgresql: test-%: $(VENV)/.dev chromium azurite
	ATELIER_TEST_DB=$* $(PYTEST)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.dev chromium azurite
	$(BIN)/python -m bench.gallery
	$(BIN)/python -m bench.web
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.images
	$(BIN)/python -m bench.flow

clean:
	rm -rf $(VENV) .node .pytest_cache .ruff_cache
