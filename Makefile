# The two front-door commands: `make run` and `make test`. Both set up what they need themselves.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
CONFIG  ?= demo/mirrordns.toml
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: what the tests drive (a real browser, dig for the tour) and what benchmarks run.
TEST_DEBS  := chromium chromium-driver dnsutils
BENCH_DEBS := dnsperf gdnsd pdns-server pdns-backend-bind pdns-backend-geoip dnsutils wrk

.PHONY: run test fuzz bench bench-dns bench-probes bench-closer bench-tcp bench-rrl bench-isolation bench-pages install install-test debs-test debs-bench lint clean

$(PY):
	python3 -m venv $(VENV) || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv && python3 -m venv $(VENV); }
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml dnsd/_udpio.c | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml dnsd/_udpio.c | $(PY)
	$(PIP) install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# apt-get only for what is missing, so a machine that has everything never touches the network.
define need_debs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; fi
endef

debs-test:
	$(call need_debs,$(TEST_DEBS))

debs-bench:
	$(call need_debs,$(BENCH_DEBS))

test: install-test debs-test
	$(PY) -m pytest $(PYTEST_ARGS)

# The DNS fuzz properties of the suite (tests/dns_fuzz.py), with fresh seeds, for as long as asked.
FUZZ_SECONDS ?= 600
fuzz: install-test
	$(PY) -m tests.dns_fuzz --seconds $(FUZZ_SECONDS)

run: install
	$(PY) -m admin.demo --config $(CONFIG)
	MIRRORDNS_CONFIG=$(CONFIG) exec $(VENV)/bin/twistd -n --pidfile= -y twistd.tac

bench: bench-dns

bench-dns: install-test debs-bench
	bench/dns.sh

bench-probes: install-test
	$(PY) bench/probes.py

bench-closer: install-test debs-bench
	bench/closer

# DNS limits (docs/benchmarks.md): TCP memory and held connections; rate limiting under a flood.
bench-tcp: install-test
	flock /tmp/mirrordns-bench.lock $(PY) bench/limits.py tcp

bench-rrl: install-test
	flock /tmp/mirrordns-bench.lock $(PY) bench/limits.py rrl

# DNS while the web is attacked (docs/benchmarks.md): DNS in its own process, and on the web's reactor.
bench-isolation: install-test debs-bench
	flock /tmp/mirrordns-bench.lock $(PY) bench/isolation.py

bench-pages: install-test
	flock /tmp/mirrordns-bench.lock $(PY) bench/pages.py

lint: install-test
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) var build *.egg-info
