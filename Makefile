# The two commands a newcomer needs: `make run` and `make test`.
#
# Python: Django 5.2 (LTS) runs on 3.10 to 3.13, and the project's code needs
# 3.11 (datetime.UTC, asyncio.timeout): 3.11 to 3.13. We build on the machine's
# python3.11 when it exists, else on python3, and refuse anything older.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint format system-deps chaos clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "No python3 found: install Python 3.11-3.13." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' || \
		{ echo "The project needs Python 3.11-3.13; $(PYTHON) is $$($(PYTHON) --version). Set PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps: reinstall only when a requirements file changes.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

## run: migrate and serve with Daphne (on uvloop) on 127.0.0.1:$(PORT) (DEBUG on unless set)
run: $(VENV)/.runtime
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} $(BIN)/python -m chatsite.serve -e tcp:port=$(PORT):interface=127.0.0.1:backlog=2048 \
		chatsite.asgi:application

## test: the whole suite (set REDIS_URL / DATABASE_URL to use real services)
test: $(VENV)/.dev
	DEBUG=1 $(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## system-deps: Debian packages the browser and stack tests need (run as root; CI does)
system-deps:
	@{ command -v chromium && command -v nginx; } >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium nginx; }

## chaos: the chaos test, bigger than in `make test` (CHAOS_CLIENTS, CHAOS_SECONDS)
chaos: $(VENV)/.dev
	DEBUG=1 DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} \
		CHAOS_CLIENTS=$${CHAOS_CLIENTS:-24} CHAOS_SECONDS=$${CHAOS_SECONDS:-60} \
		$(BIN)/pytest tests/test_chaos.py -m chaos -s -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles

# --- Benchmark (issue 10; never part of `make test`) -------------------------------
# The project (production settings, PostgreSQL, Redis, Daphne) beside the peers in
# ../shared/peers under ../shared/bench/loadgen.py. Needs PostgreSQL and Redis on
# 127.0.0.1; see docs/performance.md. BENCH_QUICK=1 make bench is a smoke run.
.PHONY: bench bench-history bench-flood bench-clean

## bench: every scenario against the project and both peers, interleaved; writes bench/results/
bench: $(VENV)/.runtime
	$(BIN)/python bench/run.py

## bench-history: only the history API on 1,000,000 stored messages
bench-history: $(VENV)/.runtime
	BENCH_SCENARIOS=history BENCH_PROFILE=0 $(BIN)/python bench/run.py

## bench-flood: one socket flooding a room vs the other members' latency (issue 7); writes bench/results/<date>-flood.*
bench-flood: $(VENV)/.runtime
	$(BIN)/python bench/flood.py

bench-clean:
	rm -rf bench/.venvs bench/logs bench/.snapshots

# --- Production topology (issue 8; docs/deploy.md) ----------------------------------
# stack: nginx in front of two Daphne processes on loopback with production settings,
# sharing PostgreSQL and Redis (started if down); state, logs and secrets in var/stack/.
# prod-check: docker-compose.yml and .env.example checked by docker-compose and against
# the code. Both may apt-get install what they miss (nginx, docker-compose) as root.
STACK_PORT ?= 8080
.PHONY: stack stack-stop prod-check

## stack: the production topology on http://127.0.0.1:$(STACK_PORT) (nginx, two Daphne, PostgreSQL, Redis)
stack: $(VENV)/.runtime
	$(BIN)/python deploy/stack.py start --port $(STACK_PORT)

## stack-stop: stop the stack's nginx and Daphne processes (PostgreSQL and Redis keep running)
stack-stop: $(VENV)/.runtime
	$(BIN)/python deploy/stack.py stop --port $(STACK_PORT)

## prod-check: `docker-compose config` (Debian's 1.29, no engine needed) and deploy/check_compose.py
prod-check: $(VENV)/.runtime
	@command -v docker-compose >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose; }
	@tmp=$$(mktemp -d) && cp .env.example $$tmp/.env && cp docker-compose.yml $$tmp/ && \
		docker-compose --project-directory $$tmp -f $$tmp/docker-compose.yml config -q; \
		status=$$?; rm -rf $$tmp; test $$status -eq 0 && echo "docker-compose config: ok"
	$(BIN)/python deploy/check_compose.py
