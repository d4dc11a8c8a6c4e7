# Landlord developer entry points. `make demo` and `make test` do all set-up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DIR ?= $(CURDIR)/.run
export LANDLORD_RUN_DIR := $(RUN_DIR)
PYTEST_ARGS ?=
# end-to-end files run this many at a time (each file on one worker; tests/e2e/conftest.py)
E2E_WORKERS ?= 2

.PHONY: setup services venv images test test-unit test-integration test-e2e fuzz demo lint proto bench down clean \
	install uninstall wheelhouse

setup: services venv images

services:
	@scripts/services.sh up

# The venv is rebuilt only when pyproject.toml changes (stamp file).
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "[setup] installing landlord (editable) and dev tools into $(VENV)"
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

images: services
	@scripts/build-demo-image.sh

# Unit, integration and fuzz tests one at a time, then the end-to-end files E2E_WORKERS at a
# time; both always run, and the target fails if either did.
test: setup
	@status=0; \
	$(BIN)/python -m pytest tests --ignore=tests/e2e $(PYTEST_ARGS) || status=1; \
	$(BIN)/python -m pytest tests/e2e -n $(E2E_WORKERS) --dist loadscope $(PYTEST_ARGS) || status=1; \
	exit $$status

test-unit: venv
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	@$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: setup
	@$(BIN)/python -m pytest tests/e2e -n $(E2E_WORKERS) --dist loadscope $(PYTEST_ARGS)

# The fuzz suite at full size (`make test` runs a bounded number of cases): 10,000 generated
# admin requests and 300 hostile agent streams against a live coordinator, with a summary.
FUZZ_EXAMPLES ?= 10000
FUZZ_STREAM_EXAMPLES ?= 300
fuzz: venv
	@FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_STREAM_EXAMPLES=$(FUZZ_STREAM_EXAMPLES) \
		$(BIN)/python -m pytest tests/fuzz -p no:cacheprovider --timeout 3600 $(PYTEST_ARGS)

demo: setup
	@$(BIN)/python scripts/demo.py

lint: venv
	@$(BIN)/ruff check --output-format concise .
	@$(BIN)/mypy

proto: venv
	@$(BIN)/python scripts/gen_proto.py

BENCHES = dataplane request_metrics recovery agent_overhead zero_downtime coordinator_scale failover

bench: setup
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

# Install on a host under systemd (as root): ROLE=agent|coordinator|both (default both),
# WHEELHOUSE=DIR installs offline from `make wheelhouse`'s wheels (dist/wheelhouse is used
# when present), RESTART=1 restarts the running daemons on the new build. See docs/install.md.
ROLE ?= both
WHEELHOUSE ?=
install:
	@$(PY) scripts/host_install.py install --role $(ROLE) $(if $(WHEELHOUSE),--wheelhouse $(WHEELHOUSE)) $(if $(RESTART),--restart)

# Removes what `make install` added; PURGE=1 also removes /etc/landlord and the agent's data.
uninstall:
	@$(PY) scripts/host_install.py uninstall $(if $(PURGE),--purge)

# Every wheel Landlord needs (its own and its dependencies') for hosts without the index.
wheelhouse: venv
	@$(BIN)/python scripts/host_install.py wheelhouse --dest $(or $(WHEELHOUSE),dist/wheelhouse)

# Stops the demo cluster and the services that scripts/services.sh started.
down:
	@test -x $(BIN)/python && $(BIN)/python scripts/demo.py --down || true
	@scripts/services.sh down

clean: down
	rm -rf $(VENV) $(RUN_DIR) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
