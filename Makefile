# Everything a fresh Debian 12/13 machine needs, as root: system packages, then a pinned virtualenv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | md5sum | cut -c1-12)
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
RUN_PKGS := fuse3 libfuse3-dev python3-venv
TEST_PKGS := $(RUN_PKGS) stress-ng fio attr chromium
BENCH_PKGS := $(TEST_PKGS) bindfs loggedfs gcc pkg-config git

.PHONY: run test bench bench-smoke soak lint system-run system-test system-bench clean

run: system-run $(STAMP)
	$(VENV)/bin/fuse-passthrough demo

test: system-test $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

bench: system-bench $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

bench-smoke: system-bench $(STAMP)
	$(PY) benchmarks/bench.py --smoke

soak: system-test $(STAMP)
	SOAK_SECONDS=$${SOAK_SECONDS:-300} $(VENV)/bin/pytest -m soak -p no:cacheprovider tests/test_load.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

# Install only what is missing; apt-get update once, only if something is.
system-run system-test system-bench: system-%:
	@pkgs="$($(shell echo $* | tr a-z A-Z)_PKGS)"; missing=""; \
	for p in $$pkgs; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && $(APT) $$missing; \
	fi

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
