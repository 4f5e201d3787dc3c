# Two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= transactions.db
MODEL_DIR ?= modeling
DEMO_TRANSACTIONS ?= 200000
DEMO_RATE ?= 20

.PHONY: demo test test-fast lint format bench clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	@test -f $(DB) || $(BIN)/python generate_database.py --db $(DB) \
		--transactions $(DEMO_TRANSACTIONS) --seed 42 --end-date $$(date +%F)
	@test -f $(MODEL_DIR)/current.json || $(BIN)/python train.py --db $(DB) --model-dir $(MODEL_DIR)
	@echo "Starting the monitor and the live feed ($(DEMO_RATE) tx/s); Ctrl-C stops both."
	@trap 'kill 0' INT TERM; \
	$(BIN)/python monitor.py --db $(DB) --model-dir $(MODEL_DIR) & \
	$(BIN)/python live_feed_simulator.py --db $(DB) --rate $(DEMO_RATE); \
	wait

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/bench_generator.py
	$(BIN)/python bench/bench_detection.py

clean-venv:
	rm -rf $(VENV)
