# The README's two commands: `make run` (the main job) and `make test`.
# Both create .venv/ at the repo root and install the project into it when needed.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch 2.13.0 is a CPU build (a few hundred MB); an unpinned torch would pull a CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: run test lint bench install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ofa-pipeline $(ARGS)

# Two workers (one per core here; tests pin torch to one thread each). --dist loadfile keeps a
# file's tests, and so its module-scoped set-ups, on one worker; TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
