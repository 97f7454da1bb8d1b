# Cipherpost: `make run` and `make test` set up everything they need on a fresh machine
# (Debian packages where missing, a virtualenv, pip and npm packages) and are safe to
# run twice.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every Python package `make test` and `make run` install, pinned with its SHA-256 hashes
# (pip --require-hashes); `make lock` recompiles it from pyproject.toml.
LOCK := requirements/dev.lock
# The supply-chain tools (uv, cyclonedx-bom, pip-audit), locked too, in a virtualenv of
# their own so that they appear in neither the project's environment nor its SBOM.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
TOOLS_LOCK := requirements/tools.lock
SBOM_NPM_DIR := requirements/npm-sbom
SBOM_NPM_STAMP := $(SBOM_NPM_DIR)/node_modules/.installed
PEER_DIR := interop/libsignal-peer
PEER_STAMP := $(PEER_DIR)/node_modules/.installed
PEER_0103_DIR := interop/libsignal-peer-0.103
PEER_0103_STAMP := $(PEER_0103_DIR)/node_modules/.installed
WEB_DIR := web
WEB_STAMP := $(WEB_DIR)/node_modules/.installed
# The browser client's static bundle, served by the relay at / (rebuilt when a source changes).
WEB_BUILD := $(WEB_DIR)/dist/index.html
WEB_SOURCES := $(shell find $(WEB_DIR)/src $(WEB_DIR)/static -type f 2>/dev/null) $(WEB_DIR)/build.mjs
# The relay's per-message modules compiled by mypyc (tools/compile_relay.py), loaded only
# while their sources are unchanged (src/cipherpost/server/native.py).
COMPILED := build/compiled/manifest.json
COMPILED_SOURCES := $(shell $(PYTHON) tools/compile_relay.py --sources 2>/dev/null) tools/compile_relay.py

.PHONY: compile run demo bench-relay bench-web test lint typecheck unit interop bench fuzz fuzz-api chaos soak lock sbom audit clean system-deps browser-deps web web-hash

# The relay on SQLite at 127.0.0.1:8080 (API docs at /docs, the web app at /); data in ./data.
run: $(STAMP) $(COMPILED) $(WEB_BUILD)
	$(VENV)/bin/cipherpost-server

compile: $(COMPILED)

$(COMPILED): $(STAMP) $(COMPILED_SOURCES)
	$(PY) tools/compile_relay.py

demo: $(STAMP)
	$(PY) -m cipherpost.demo

# The server tests start a private PostgreSQL, Redis and nginx on 127.0.0.1 (tests/support/).
# --dist worksteal: a worker that runs out of tests takes some of the other's, so the two
# end together (the default hands each a fixed share, and one ran on alone for minutes).
# Tests marked slow (the interop forward-jump test in every direction) run in `make interop`.
test: system-deps browser-deps $(STAMP) $(COMPILED) $(PEER_STAMP) $(PEER_0103_STAMP) $(WEB_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks vectors examples tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	cd $(WEB_DIR) && npm run --silent typecheck && npm test --silent
	$(PY) -m pytest -n 2 --dist worksteal -q -m "not slow" --durations=15

# The SHA-256 of the browser client's bundle (app.js) and of strength.js (the passphrase
# check) these sources build, written into web/README.md (the About page shows the same
# values; tests/web checks the README).
web-hash: $(WEB_STAMP)
	cd $(WEB_DIR) && hashes=$$(npm run --silent hashes) && \
	  app=$$(echo "$$hashes" | sed -n 's/^app\.js //p') && \
	  strength=$$(echo "$$hashes" | sed -n 's/^strength\.js //p') && \
	  sed -i -E -e "s/^(Bundle SHA-256 \(app\.js\): )\`[0-9a-f]{64}\`/\1\`$$app\`/" \
	    -e "s/^(Passphrase check SHA-256 \(strength\.js\): )\`[0-9a-f]{64}\`/\1\`$$strength\`/" README.md && \
	  grep -q "$$app" README.md && grep -q "$$strength" README.md && \
	  echo "web/README.md: app.js sha256 $$app, strength.js sha256 $$strength"

# The TypeScript protocol core alone: type check and unit tests.
web: $(WEB_STAMP)
	cd $(WEB_DIR) && npm run --silent typecheck && npm test --silent

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks vectors examples tools

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q -m "not interop"

interop: $(STAMP) $(PEER_STAMP) $(PEER_0103_STAMP) $(WEB_STAMP)
	$(PY) -m pytest -q tests/interop

bench: $(STAMP) $(PEER_STAMP) $(PEER_0103_STAMP)
	$(PY) benchmarks/protocol_bench.py

bench-relay: $(STAMP) $(COMPILED)
	$(PY) benchmarks/relay_load.py

# The TypeScript protocol core under Node next to the Python one (W1-W4, same run).
bench-web: $(STAMP) $(WEB_STAMP)
	$(PY) benchmarks/web_bench.py

# Long runs, outside `make test`: the property tests, every fuzz target of tests/assurance
# under Hypothesis and then coverage-guided under atheris (FUZZ_SECONDS per target, default
# 90, or FUZZ_RUNS inputs per target), device_frame once more on PostgreSQL (its figures in
# build/assurance/postgresql/), then the figures (build/assurance/summary.json).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q tests/properties
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q -n 2 tests/assurance/test_fuzz.py
	$(PY) -m tests.assurance.fuzz_atheris --jobs 2
	FUZZ_DATABASE=postgresql ASSURANCE_RESULTS=build/assurance/postgresql \
		$(PY) -m tests.assurance.fuzz_atheris device_frame
	$(PY) -m tests.assurance.report

# Schemathesis against the relay's OpenAPI document (in process) with many more requests
# than `make test` sends (API_FUZZ_EXAMPLES per operation and mode, default 1000).
fuzz-api: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q -n 2 tests/assurance/test_api_fuzz.py
	$(PY) -m tests.assurance.report

# Fault injection, long: the relay SIGKILLed CHAOS_KILLS times (default 50) at random moments
# under a load of real clients; `make test` runs quick versions (also a full disk and a
# read-only database). Figures: build/assurance/chaos/.
chaos: $(STAMP) $(COMPILED)
	$(PY) -m tests.assurance.chaos --kills $${CHAOS_KILLS:-50}
	$(PY) -m tests.assurance.report

# Soak, outside `make test` (which runs 20 s of it): a relay process under paced senders,
# reconnecting receivers and device churn for SOAK_SECONDS (default 3600); relay RSS and
# delivery latency of the first and last stretch (drift) in build/assurance/soak/.
soak: $(STAMP) $(COMPILED)
	$(PY) -m tests.assurance.soak --seconds $${SOAK_SECONDS:-3600}
	$(PY) -m tests.assurance.report

# Recompile the lock files from pyproject.toml and requirements/*.in (hashes included).
lock: $(TOOLS_STAMP)
	$(TOOLS)/bin/uv pip compile --quiet --universal --generate-hashes --python-version 3.11 \
		--custom-compile-command "make lock" \
		--extra dev pyproject.toml requirements/build.in -o $(LOCK)
	$(TOOLS)/bin/uv pip compile --quiet --universal --generate-hashes --python-version 3.11 \
		--custom-compile-command "make lock" \
		requirements/tools.in -o $(TOOLS_LOCK)

# CycloneDX SBOMs: the project's Python environment (as installed from the lock) and the
# three npm projects (from their package-lock.json files), in build/sbom/.
sbom: $(STAMP) $(TOOLS_STAMP) $(SBOM_NPM_STAMP)
	mkdir -p build/sbom
	$(TOOLS)/bin/cyclonedx-py environment --output-reproducible --of JSON \
		-o build/sbom/python.cdx.json $(PY)
	for d in $(WEB_DIR) $(PEER_DIR) $(PEER_0103_DIR); do \
		(cd $$d && $(CURDIR)/$(SBOM_NPM_DIR)/node_modules/.bin/cyclonedx-npm --package-lock-only \
			--output-reproducible --flatten-components --output-format JSON \
			--output-file $(CURDIR)/build/sbom/npm-$$(basename $$d).cdx.json) || exit 1; \
	done
	$(PY) -m tests.assurance.sbom build/sbom

# Known vulnerabilities in the locked dependencies: pip-audit and npm audit. Not part of
# `make test`: their databases are on the network; an unreachable one is reported as
# "NOT AUDITED" (exit 2), a vulnerability as exit 1.
audit: $(STAMP) $(TOOLS_STAMP)
	$(PY) -m tests.assurance.audit

$(TOOLS_STAMP): $(TOOLS_LOCK)
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --require-hashes -r $(TOOLS_LOCK)
	touch $(TOOLS_STAMP)

$(SBOM_NPM_STAMP): $(SBOM_NPM_DIR)/package.json $(SBOM_NPM_DIR)/package-lock.json
	@$(MAKE) --no-print-directory system-deps
	cd $(SBOM_NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(SBOM_NPM_STAMP)

system-deps:
	@missing=""; \
	command -v $(PYTHON) >/dev/null || missing="$$missing python3"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null \
		|| missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	$(PYTHON) -c 'import os, sysconfig; assert os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
		2>/dev/null || missing="$$missing python3-dev"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The browser tests (tests/web) drive Debian's chromium (Playwright's own download is not used).
browser-deps:
	@test -x /usr/bin/chromium || { echo "installing Debian packages: chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The locked set first (hashes required), then Cipherpost itself without dependencies or
# build isolation (its build backend is in the lock); pip check fails when pyproject.toml
# names a dependency the lock lacks (run `make lock` after changing dependencies).
$(STAMP): pyproject.toml $(LOCK)
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; echo "a dependency of pyproject.toml is missing from $(LOCK): run make lock"; exit 1; }
	touch $(STAMP)

$(PEER_STAMP): $(PEER_DIR)/package.json $(PEER_DIR)/package-lock.json
	@$(MAKE) --no-print-directory system-deps
	cd $(PEER_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(PEER_STAMP)

$(PEER_0103_STAMP): $(PEER_0103_DIR)/package.json $(PEER_0103_DIR)/package-lock.json
	@$(MAKE) --no-print-directory system-deps
	cd $(PEER_0103_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(PEER_0103_STAMP)

$(WEB_STAMP): $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json
	@$(MAKE) --no-print-directory system-deps
	cd $(WEB_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

$(WEB_BUILD): $(WEB_STAMP) $(WEB_SOURCES) $(WEB_DIR)/package-lock.json
	cd $(WEB_DIR) && npm run --silent build

clean:
	rm -rf $(VENV) $(TOOLS) $(SBOM_NPM_DIR)/node_modules $(PEER_DIR)/node_modules $(PEER_0103_DIR)/node_modules $(WEB_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
