# The two commands a user needs: `make run` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# pytest-xdist workers for the tests: one guest at a time each, so one per core, at most 4.
TEST_JOBS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: deps run test test-slow unit integration lint bench clean

deps: $(STAMP)
	@./images/setup-host.sh

$(STAMP): pyproject.toml
	@./images/setup-host.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.stamp-* && touch $@

# The default suite: the Debian kernels the specs resolve to now, then the scenario catalogue on
# kernel and model side by side over both platforms x debian:6.1, debian:6.12 and the newest
# kernel Debian has, with the 2022 proposal's answers beside (RUN_JOBS guests at a time); it
# ends with the matrix and the path of report.html (exit 1 when a scenario failed).
RUN_JOBS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)
run: deps
	$(VENV)/bin/iommu-harness kernels
	$(VENV)/bin/iommu-harness run --platform all -j $(RUN_JOBS) --also-profile proposal-2022

lint: deps
	$(VENV)/bin/ruff check harness tests bench
	$(VENV)/bin/mypy harness
	$(VENV)/bin/mypy tests bench

unit: deps
	$(PY) -m pytest tests/unit -q

integration: deps
	$(PY) -m pytest tests/integration -q -n $(TEST_JOBS) --dist worksteal

test: lint
	$(PY) -m pytest tests/unit tests/integration -q -n $(TEST_JOBS) --dist worksteal

# End to end on a real kernel tree (Debian's linux-source-6.1 made a git repository, built by
# the harness): --kernel DIR, validate and bisect. Long from an empty cache (see the README).
test-slow: deps
	$(PY) -m pytest tests/slow -v

bench: deps
	$(PY) bench/boot.py --platform x86_64-vtd --platform aarch64-smmuv3 \
		--kernel debian:6.1 --kernel debian:6.12 --kernel debian:7.2
	$(PY) bench/ops.py --platform x86_64-vtd --platform aarch64-smmuv3 \
		--kernel debian:6.1 --kernel debian:6.12 --kernel debian:7.2
	$(PY) bench/restore.py --kernel debian:6.1 --kernel debian:7.2 --catalogue
	$(PY) bench/model.py
	$(PY) bench/run.py --jobs 1,2
	$(PY) bench/vfio.py --platform x86_64-vtd --platform aarch64-smmuv3

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
