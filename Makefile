# Two set-up commands: `make run` and `make test`. Everything else installs itself on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per purpose: each installs install_requires plus the extras it needs (setup.cfg).
STAMP = $(VENV)/.installed-$(1)
# `make run` installs what the README's commands need: the embedded database and `python -m service ask`.
EXTRAS_run := embedded cli
EXTRAS_test := embedded cli test lint bench
EXTRAS_bench := embedded cli test bench
EXTRAS_lint := lint
# The browser tests drive Debian's Chromium with Playwright (never `playwright install`: it downloads).
CHROMIUM := /usr/bin/chromium
# promtool checks and unit-tests the alert rules in ops/prometheus; Debian's prometheus package carries it.
PROMTOOL := /usr/bin/promtool
# The bench's HTTP load comes from Debian's wrk (C), so that the load generator does not measure itself.
WRK := /usr/bin/wrk
# tests/test_nginx.py runs ops/nginx/ in Debian's nginx, in front of eco-outbox and a stand-in old backend.
NGINX := /usr/sbin/nginx
export PYTHONPATH := $(CURDIR)

# setup.cfg is the one list of dependencies; pip cannot install a setup.cfg-only tree, so read it here:
# install_requires and the extras named on the command line.
define REQUIREMENTS
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
groups = [cfg["options"]["install_requires"]] + [cfg["options.extras_require"][k] for k in sys.argv[1:]]
print("\n".join(line.strip() for group in groups for line in group.splitlines() if line.strip()))
endef
export REQUIREMENTS

.PHONY: install run migrate test stress bench lint clean

install: $(call STAMP,test)

$(VENV)/.installed-%: setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "$$REQUIREMENTS" $(EXTRAS_$*) > $(VENV)/requirements-$*.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(VENV)/requirements-$*.txt
	touch $@

run: $(call STAMP,run)
	$(PY) -m service serve

migrate: $(call STAMP,run)
	$(PY) -m service migrate

test: $(call STAMP,test) $(CHROMIUM) $(PROMTOOL) $(WRK) $(NGINX)
	$(PY) -m pytest $(PYTEST_ARGS)

# The fault and race tests, N times in a row (fresh pytest each time), with each run's result and the pass
# count: `make stress N=30 TESTS=tests/faults/test_outages.py::test_an_outage_twice_the_max_age_kills_no_deliverable_signal`.
N ?= 10
TESTS ?= tests/faults tests/test_race.py tests/test_relay_timing.py tests/test_relay_lease.py tests/test_early_disconnect.py
stress: $(call STAMP,test)
	$(PY) -m tests.stress $(N) $(TESTS) --pytest-args="$(PYTEST_ARGS)"

$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

$(PROMTOOL):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

$(NGINX):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx

bench: $(call STAMP,bench) $(WRK)
	$(PY) -m tests.bench $(BENCH_ARGS)

$(WRK):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk

lint: $(call STAMP,lint)
	$(PY) -m ruff check --line-length 110 --target-version py311 --select E,F,W,I,B,UP,ASYNC service outbox tests
	$(PY) -m ruff format --check --line-length 110 service outbox tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
