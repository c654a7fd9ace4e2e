# meshloop — two commands do all the set-up on a fresh machine:
#   make up     create the environment if missing, install, run meshloop (embedded store)
#   make test   create the environment if missing, install, run the whole test suite
# Dependencies are pinned in uv.lock; uv itself is installed into .tools/ by pip.

PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
STAMP := $(VENV)/.synced-$(UV_VERSION)

export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1

ARGS ?=
PYTEST_ARGS ?=

.PHONY: up test bench lint env clean help

help:
	@echo "make up      run meshloop on the embedded store (ARGS='--http-port 0 ...')"
	@echo "make test    run the whole test suite (PYTEST_ARGS='-k store ...')"
	@echo "make bench   run the benchmarks, each beside its baseline"
	@echo "make lint    ruff + mypy"
	@echo "make clean   remove the environment (.venv, .tools)"

$(UV):
	@echo "installing uv $(UV_VERSION) into $(TOOLS)/"
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(TOOLS) uv==$(UV_VERSION)

# xds-protos bundles an old copy of opentelemetry/proto/* that overwrites (or not: the
# install order decides) opentelemetry-proto's files; reinstall the latter last, so
# the OTLP protos are always the current ones.
OTEL_PROTO_VERSION := $(shell awk '/^name = "opentelemetry-proto"$$/ {getline; gsub(/"/, "", $$3); print $$3}' uv.lock)

$(STAMP): uv.lock pyproject.toml | $(UV)
	@echo "syncing $(VENV) with uv.lock"
	$(UV) sync --frozen --python $(PYTHON)
	$(UV) pip install --quiet --python $(VENV)/bin/python --no-deps --reinstall-package opentelemetry-proto \
		opentelemetry-proto==$(OTEL_PROTO_VERSION)
	@touch $@

# meshloop's C libraries, built with the system C compiler ($CC, default cc) by the same
# functions that build them on first use: the access-log decoder, and the writer of
# ClickHouse Native strings the embedded store inserts with.
NATIVE := meshloop/accesslog/_als_decode.so meshloop/store/_native_strings.so

meshloop/accesslog/_als_decode.so: meshloop/accesslog/_als_decode.c $(STAMP)
	@echo "building $@"
	$(VENV)/bin/python -m meshloop.accesslog.native

meshloop/store/_native_strings.so: meshloop/store/_native_strings.c $(STAMP)
	@echo "building $@"
	$(VENV)/bin/python -m meshloop.store.native_format

env: $(STAMP) $(NATIVE)

up: $(STAMP) $(NATIVE)
	$(VENV)/bin/meshloop up $(ARGS)

test: $(STAMP) $(NATIVE)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) $(NATIVE)
	$(VENV)/bin/python -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check meshloop tests benchmarks scripts
	$(VENV)/bin/mypy meshloop

clean:
	rm -rf $(VENV) $(TOOLS) $(NATIVE)
