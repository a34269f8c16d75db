# The two set-up commands: `make demo` runs the Ames comparison, `make test` runs linters and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo compare test test-slow lint bench figures compare-figures docker-compose-plugin docker-image docker-test clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned exactly: any other spec pulls several GB of CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ciphergrad.client.demo

# Every algorithm encrypted vs plaintext into report/ (index.html); ARGS="--scaling" adds the rows sweep.
# `make test` runs the --quick version (tests/test_compare.py).
compare: $(STAMP)
	$(BIN)/python -m ciphergrad.client.compare $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# Two processes, whole files to each (module-scoped servers stay in one): about half the time on 2 cores.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

BENCHMARKS := ames logreg inference stats neighbors scaling service million scaleout hostile pools

# Each benchmark's JSON line goes to benchmarks/results/NAME.json (the README's and docs' tables come from
# there: make figures); a missed target fails the run after its line is kept.
bench: $(STAMP)
	mkdir -p benchmarks/results
	for name in $(BENCHMARKS); do \
		$(BIN)/python benchmarks/$$name.py --json > benchmarks/results/$$name.out; status=$$?; \
		tail -n 1 benchmarks/results/$$name.out > benchmarks/results/$$name.json; rm benchmarks/results/$$name.out; \
		[ $$status -eq 0 ] || exit 1; \
	done
	$(BIN)/python benchmarks/figures.py

figures: $(STAMP)
	$(BIN)/python benchmarks/figures.py

# The comparison report's tables and two of its plots in docs/benchmarks.md (about 5 minutes).
compare-figures: $(STAMP)
	$(BIN)/python -m ciphergrad.client.compare --scaling --out report
	mkdir -p benchmarks/results/compare
	cp report/compare.md report/compare.json benchmarks/results/compare/
	cp report/loss_ames-converged-gd.png docs/compare_loss_ames_converged.png
	cp report/scaling.png docs/compare_scaling.png
	$(BIN)/python benchmarks/figures.py

# Needs a Docker engine (see docs/docker.md). .venv provides pip for the wheelhouse and the compose binary.
docker-compose-plugin: $(STAMP)
	docker/install-compose-plugin.sh $(BIN)/python

docker-image: $(STAMP)
	docker/build-image.sh

docker-test: $(STAMP)
	$(BIN)/python -m pytest -q -s -m docker tests/test_docker.py tests/test_docker_ray.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
