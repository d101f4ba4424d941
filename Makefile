# Everything a fresh Debian 12/13 machine needs, as root: system packages, then a pinned virtualenv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CSOURCES := $(wildcard src/fuse_passthrough/*.c src/fuse_passthrough/*/*.c src/fuse_passthrough/*/*.h)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock setup.py $(CSOURCES) | md5sum | cut -c1-12)
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
RUN_PKGS := fuse3 libfuse3-dev python3-venv attr gcc python3-dev liburing-dev
# CPython's own tests (the benchmark's testsuite workload), for the system's python3
PY_TESTSUITE := libpython$(shell python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)-testsuite
TEST_PKGS := $(RUN_PKGS) stress-ng fio chromium pkg-config curl $(PY_TESTSUITE)
BENCH_PKGS := $(TEST_PKGS) bindfs loggedfs gcc pkg-config git

.PHONY: run test test-libfuse-3.17 libfuse-3.17 bench bench-smoke soak lint install-launcher \
	system-run system-test \
	system-bench clean

# libfuse >= 3.17 for kernel passthrough: the system's on Debian 13; on Debian 12 (3.14) a copy built from
# Debian 13's source into .cache (tools/build-libfuse.sh) and loaded with FUSE_LIBRARY_PATH.
NEW_LIBFUSE := $(CURDIR)/.cache/libfuse-3.17/lib/libfuse3.so.4
LIBFUSE_ENV = $(if $(shell pkg-config --atleast-version=3.17 fuse3 2>/dev/null && echo y),,FUSE_LIBRARY_PATH=$(NEW_LIBFUSE))
# Run again on libfuse 3.17: the binding, the passthrough tests, the POSIX, caching and native-behaviour tests,
# tracing and fault injection (the low-level binding's mount test also runs both versions in one run); then the
# POSIX tests through a --passthrough mount, where the kernel does the reads and writes.
TESTS_ON_3_17 := tests/test_kernel_passthrough.py tests/test_ops.py tests/test_lifecycle.py tests/tracing \
	tests/test_native_sequences.py tests/test_mount_helper.py tests/lowlevel tests/test_differential.py \
	tests/test_multiuser.py tests/test_caching.py tests/test_native_behaviour.py tests/faults tests/test_faults.py \
	tests/test_trace_command.py tests/test_behind_the_back.py tests/test_io_uring.py
# FUSE over io_uring (Linux >= 6.14, lowlevel/uring.c): the POSIX, caching, behind-the-back, tracing, fault and
# lifecycle tests again with every request through it (the tests switch the kernel's enable_uring on and back).
TESTS_IN_IO_URING_MODE := tests/test_ops.py tests/test_differential.py tests/test_multiuser.py \
	tests/test_native_sequences.py tests/test_behind_the_back.py tests/test_caching.py tests/tracing tests/faults \
	tests/test_faults.py tests/test_lifecycle.py tests/test_stress_ng.py
# The POSIX tests again with every reply sent from Python (the binding's fallback where _trampolines.c is not built).
TESTS_WITH_CTYPES_REPLIES := tests/test_ops.py tests/test_native_sequences.py
TESTS_IN_PASSTHROUGH_MODE := tests/test_ops.py tests/test_differential.py tests/test_multiuser.py \
	tests/test_native_sequences.py tests/test_stress_ng.py tests/test_behind_the_back.py

run: system-run $(STAMP) install-launcher
	$(VENV)/bin/fuse-passthrough demo

test: system-test $(STAMP) libfuse-3.17 install-launcher
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest
	FUSE_PASSTHROUGH_NO_TRAMPOLINES=1 $(VENV)/bin/pytest -p no:cacheprovider $(TESTS_WITH_CTYPES_REPLIES)
	@if [ -e /sys/module/fuse/parameters/enable_uring ]; then \
	  echo 'FPT_MOUNT_ARGS="-o io_uring" $(VENV)/bin/pytest -p no:cacheprovider $$(TESTS_IN_IO_URING_MODE)'; \
	  FPT_MOUNT_ARGS="-o io_uring" $(VENV)/bin/pytest -p no:cacheprovider $(TESTS_IN_IO_URING_MODE); \
	else echo "io_uring stage skipped: this kernel has no FUSE over io_uring (Linux >= 6.14, CONFIG_FUSE_IO_URING)"; fi
	$(MAKE) --no-print-directory test-libfuse-3.17

test-libfuse-3.17: system-test $(STAMP) libfuse-3.17
	$(LIBFUSE_ENV) $(VENV)/bin/pytest -p no:cacheprovider $(TESTS_ON_3_17)
	$(LIBFUSE_ENV) FPT_MOUNT_ARGS=--passthrough $(VENV)/bin/pytest -p no:cacheprovider $(TESTS_IN_PASSTHROUGH_MODE)

libfuse-3.17: system-test $(STAMP)
	@pkg-config --atleast-version=3.17 fuse3 || tools/build-libfuse.sh .cache/libfuse-3.17

bench: system-bench $(STAMP) libfuse-3.17
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

bench-smoke: system-bench $(STAMP) libfuse-3.17
	$(PY) benchmarks/bench.py --smoke

soak: system-test $(STAMP)
	SOAK_SECONDS=$${SOAK_SECONDS:-300} $(VENV)/bin/pytest -m soak -p no:cacheprovider tests/test_load.py

# mount(8) and fstab (mount -t fuse.fuse-passthrough) run `fuse-passthrough` from a fixed PATH: as root, link this
# checkout's there unless something is there already (README "mount(8), fstab and systemd").
LAUNCHER := /usr/local/bin/fuse-passthrough
install-launcher: $(STAMP)
	@tools/install-launcher.sh $(CURDIR)/$(VENV)/bin/fuse-passthrough $(LAUNCHER)

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

$(STAMP): pyproject.toml requirements.lock setup.py $(CSOURCES)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .cache
