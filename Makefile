# dermnet: `make demo` and `make test` set everything up themselves (a .venv from the
# requirement files, rebuilt whenever they change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
GAN_DEMO_DIR ?= gan-demo
# pytest selection: `make test` runs everything; `make test-fast` skips @pytest.mark.slow.
# Tests run in one process per core (pytest-xdist), a module's tests together so that its
# fixtures are made once; `make test PYTEST_WORKERS=0` runs them in this process.
PYTEST_WORKERS ?= auto
PYTEST_ARGS ?=
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: venv test test-fast lint demo gan-demo bench clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/python -m dermnet.demo --out $(DEMO_DIR)

# The GAN demonstration of the README (about 20 min on 2 CPU cores); each step is skipped
# when its output is already there, so an interrupted run picks up where it stopped.
gan-demo: $(STAMP)
	test -f $(GAN_DEMO_DIR)/gan/finished.json || \
	  $(BIN)/python -m gan train --preset phantom --out $(GAN_DEMO_DIR)/gan
	test -f $(GAN_DEMO_DIR)/classifier-32/finished.json || \
	  $(BIN)/python train.py --preset demo --no-clinical --resolution 32x32 --epochs 20 \
	    --out $(GAN_DEMO_DIR)/classifier-32
	$(BIN)/python -m gan assess $(GAN_DEMO_DIR)/gan --classifier $(GAN_DEMO_DIR)/classifier-32
	test -f $(GAN_DEMO_DIR)/images/HAM10000_metadata.csv || \
	  $(BIN)/python -m gan generate $(GAN_DEMO_DIR)/gan --num-images 700 \
	    --out $(GAN_DEMO_DIR)/images

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(GAN_DEMO_DIR) .pytest_cache .ruff_cache
