# Two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= transactions.db
MODEL_DIR ?= modeling
# Accounts live in the database; an old credentials file is only read once, to move them in.
CREDENTIALS ?= credentials.yaml
PORT ?= 8501
DEMO_TRANSACTIONS ?= 200000
DEMO_RATE ?= 20

.PHONY: demo test test-system-packages test-fast lint format bench bench-quality bench-feedback bench-cases bench-scale bench-postgres clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=68'
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@# setuptools' notes on editable installs are for its own developers, not ours to read.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python generate_database.py --if-empty --db '$(DB)' \
		--transactions $(DEMO_TRANSACTIONS) --seed 42 --end-date $$(date +%F)
	@$(BIN)/python train.py --if-needed --db '$(DB)' --model-dir $(MODEL_DIR)
	@$(BIN)/python -m schemewatch users list --db '$(DB)' --credentials $(CREDENTIALS) 2>/dev/null \
		| grep -q . \
		|| $(BIN)/python -m schemewatch users add demo --role supervisor \
		--name "Demo auditor" --random-password --db '$(DB)'
	$(BIN)/python -m schemewatch.demo --db '$(DB)' --model-dir $(MODEL_DIR) \
		--credentials $(CREDENTIALS) --port $(PORT) --rate $(DEMO_RATE)

# What the tests need from Debian (chromium, PostgreSQL's server programs) is installed first.
test: test-system-packages $(STAMP)
	$(BIN)/python -m pytest -q -n auto

test-system-packages:
	@sh tools/install-test-system-packages

test-fast: test-system-packages $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m "not slow and not browser"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/bench_generator.py
	$(BIN)/python bench/bench_detection.py
	$(BIN)/python bench/bench_dashboard.py
	$(BIN)/python bench/bench_generic.py

bench-quality: $(STAMP)
	$(BIN)/python bench/bench_quality.py --seeds 1 2 3 4 5 --transactions 300000

bench-feedback: $(STAMP)
	$(BIN)/python bench/bench_feedback.py --seed 1
	$(BIN)/python bench/bench_feedback.py --seed 2

bench-cases: $(STAMP)
	$(BIN)/python bench/bench_cases.py --seed 1
	$(BIN)/python bench/bench_cases.py --seed 2

bench-scale: $(STAMP)
	$(BIN)/python bench/bench_scale.py --rows 1000000 3000000 10000000

# A throwaway PostgreSQL cluster of its own; PG_URL=postgresql://... to use a running server.
bench-postgres: $(STAMP)
	$(BIN)/python bench/bench_postgres.py --rows 1000000 $(if $(PG_URL),--url '$(PG_URL)')

clean-venv:
	rm -rf $(VENV)
