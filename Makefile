# Two commands for a fresh machine: `make run` (the server on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= heartbeat-data
# The browser tests drive Debian's Chromium (no browser can be downloaded by Playwright here).
CHROMIUM ?= /usr/bin/chromium
# The deployment test validates docker-compose.yml with Debian's docker-compose (no engine needed).
DOCKER_COMPOSE ?= /usr/bin/docker-compose
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends

.PHONY: run test lint test-sqlite test-mysql test-s3 bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed-run

$(CHROMIUM):
	$(APT_INSTALL) chromium || ($(SUDO) apt-get update -q && $(APT_INSTALL) chromium)

# After the browser: two apt-get runs at once (make -j) would fight over dpkg's lock.
$(DOCKER_COMPOSE): | $(CHROMIUM)
	$(APT_INSTALL) docker-compose || ($(SUDO) apt-get update -q && $(APT_INSTALL) docker-compose)

run: $(VENV)/.installed-run
	$(BIN)/heartbeat serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

# The whole suite on SQLite, again on MariaDB/MySQL (HEARTBEAT_TEST_DB_AUTH, or root@127.0.0.1), and a
# third time in production shape, MariaDB with the images in S3 (an `rclone serve s3` the tests start,
# which checks Signature V4 as a real store does, or the MinIO that HEARTBEAT_TEST_S3_ENDPOINT,
# HEARTBEAT_TEST_S3_ACCESS_KEY, HEARTBEAT_TEST_S3_SECRET_KEY name).
# The three passes run at the same time (each on a database of its own), each pass's output shown whole
# when it ends; `make test-sqlite` (or -mysql, -s3) runs one alone.
PYTEST = $(BIN)/pytest -p no:cacheprovider

test: lint | $(CHROMIUM) $(DOCKER_COMPOSE)
	$(MAKE) --no-print-directory -j3 --output-sync=target test-sqlite test-mysql test-s3

test-sqlite: $(VENV)/.installed-test | $(CHROMIUM) $(DOCKER_COMPOSE)
	HEARTBEAT_TEST_DB=sqlite HEARTBEAT_TEST_OUTPUT=test-output/sqlite $(PYTEST)

test-mysql: $(VENV)/.installed-test | $(CHROMIUM) $(DOCKER_COMPOSE)
	HEARTBEAT_TEST_DB=mysql HEARTBEAT_TEST_OUTPUT=test-output/mysql $(PYTEST)

test-s3: $(VENV)/.installed-test | $(CHROMIUM) $(DOCKER_COMPOSE)
	HEARTBEAT_TEST_DB=mysql HEARTBEAT_TEST_STORAGE=s3 HEARTBEAT_TEST_OUTPUT=test-output/s3 $(PYTEST)

# The benchmarks (not part of `make test`): on MariaDB at 127.0.0.1:3306 as root, in databases
# heartbeat_bench*. BENCH_ARGS passes options, e.g. BENCH_ARGS=--profile=20 (py-spy on the API).
bench: $(VENV)/.installed-bench
	bash .ci/mariadb-up
	$(BIN)/python tests/benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
