# DICOMLabelmapSeg developer and CI entry points.
#
#   make demo        export a real segmentation in every transfer syntax, read it back, print a table
#   make test        the test suite (without the `slow` marker) + the Slicer 5.12 compatibility run
#   make test-all    everything, slow tests included
#   make test-compat core tests in .venv-compat, pinned to the packages Slicer 5.12 bundles
#   make lint        ruff and mypy (the library)
#   make bench       the benchmark (bench/run.py)
#   make fuzz        fuzz the SEG, NRRD, NIfTI and label-table readers with atheris (FUZZ_SECONDS=300 each)
#   make clean       caches and outputs; `make distclean` also removes the virtual environments
#
# Every target installs what it needs first (idempotent; a no-op when already done):
# .venv with `pip install -e .[test,mrml,pacs,dask]`, Debian's dcmtk (validator) and orthanc + orthanc-dicomweb
# (PACS tests), dcmjs and cornerstone3D (OHIF's SEG loader and image loader) in Testing/js (validators).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_COMPAT := .venv-compat
PY := $(VENV)/bin/python
PY_COMPAT := $(VENV_COMPAT)/bin/python
COMPAT_CONSTRAINTS := Resources/constraints-slicer-5.12.txt

# Setup is redone only when what it installs from changes (the stamp name is a hash of those files).
SETUP_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
COMPAT_HASH := $(shell cat pyproject.toml $(COMPAT_CONSTRAINTS) | sha256sum | cut -c1-16)
STAMP := $(VENV)/.setup-$(SETUP_HASH)
STAMP_COMPAT := $(VENV_COMPAT)/.setup-$(COMPAT_HASH)
JS_STAMP := Testing/js/node_modules/.installed

# root installs with apt-get directly, others through sudo when it exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

PYTEST_ARGS ?=
# Core tests for the compatibility run: everything that needs neither slicer-core, the servers
# (Orthanc, Dask: extras pacs/dask) nor much time.
COMPAT_MARKERS := not slow and not mrml and not services

.PHONY: help setup setup-python setup-compat setup-tools demo test test-main test-compat test-all \
        lint bench fuzz clean distclean

help:
	@sed -n '3,11p' Makefile | sed 's/^# *//'

## ---- setup ---------------------------------------------------------------------------------------

setup: setup-python setup-tools

setup-python: $(STAMP)

$(STAMP):
	@echo "==> Python environment $(VENV) (pip install -e .[test,mrml,pacs,dask])"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed (highdicom); set PYTHON=...")'
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,mrml,pacs,dask]"
	@rm -f $(VENV)/.setup-*
	@touch $@

setup-compat: $(STAMP_COMPAT) setup-tools

$(STAMP_COMPAT): $(COMPAT_CONSTRAINTS)
	@echo "==> Compatibility environment $(VENV_COMPAT): $$(grep -v '^#' $(COMPAT_CONSTRAINTS) | tr '\n' ' ')"
	@[ -x $(PY_COMPAT) ] || $(PYTHON) -m venv $(VENV_COMPAT)
	$(PY_COMPAT) -m pip install --quiet --upgrade pip
	$(PY_COMPAT) -m pip install --quiet -c $(COMPAT_CONSTRAINTS) -e ".[test]"
	@rm -f $(VENV_COMPAT)/.setup-*
	@touch $@

# External validators: DCMTK (Debian package), dcmjs and @cornerstonejs/adapters + dicom-image-loader (npm, pinned by Testing/js/package-lock.json).
setup-tools: $(JS_STAMP)
	@if ! command -v Orthanc >/dev/null && [ ! -x /usr/sbin/Orthanc ] || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then \
	    if command -v apt-get >/dev/null; then \
	        echo "==> apt-get install orthanc orthanc-dicomweb (PACS tests: a real server on loopback)"; \
	        $(SUDO) apt-get update -qq && $(APT_INSTALL) orthanc orthanc-dicomweb >/dev/null; \
	    else echo "WARNING: Orthanc not found and no apt-get: the PACS tests will skip (fail in CI)"; fi; \
	fi
	@if ! command -v dcmdjpls >/dev/null; then \
	    if command -v apt-get >/dev/null; then \
	        echo "==> apt-get install dcmtk"; \
	        $(SUDO) apt-get update -qq && $(APT_INSTALL) dcmtk >/dev/null; \
	    else echo "WARNING: dcmdjpls (DCMTK) not found and no apt-get: the DCMTK validator tests will skip"; fi; \
	fi

$(JS_STAMP): Testing/js/package.json Testing/js/package-lock.json
	@if ! command -v npm >/dev/null; then \
	    echo "==> apt-get install nodejs npm"; \
	    $(SUDO) apt-get update -qq && $(APT_INSTALL) nodejs npm >/dev/null; \
	fi
	@echo "==> npm ci (dcmjs, @cornerstonejs/adapters, @cornerstonejs/dicom-image-loader) in Testing/js"
	cd Testing/js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

## ---- main jobs -----------------------------------------------------------------------------------

demo: setup
	$(PY) demo/run_demo.py

# pytest exit code 5 means "no tests collected": reported loudly, but not a failure of the setup.
define run_pytest
	@echo '==> $(1) -m pytest $(2)'
	@rc=0; $(1) -m pytest $(2) || rc=$$?; \
	if [ $$rc = 5 ]; then echo "pytest collected no tests ($(2))"; rc=0; fi; exit $$rc
endef

# Both runs always happen (a failure in the first does not hide the second); fails if either failed.
test:
	@rc=0; $(MAKE) --no-print-directory test-main || rc=1; \
	$(MAKE) --no-print-directory test-compat || rc=1; \
	if [ $$rc = 0 ]; then echo "==> make test: all passed"; else echo "==> make test: FAILED (see above)"; fi; exit $$rc

test-main: setup
	$(call run_pytest,$(PY),-m "not slow" $(PYTEST_ARGS))

test-compat: setup-compat
	@$(PY_COMPAT) -c 'import pydicom, highdicom, jpeg_ls; print("compat:", "pydicom", pydicom.__version__, "highdicom", highdicom.__version__, "pyjpegls", getattr(jpeg_ls, "__version__", "?"))'
	$(call run_pytest,$(PY_COMPAT),-m "$(COMPAT_MARKERS)" -p no:cacheprovider $(PYTEST_ARGS))

test-all: setup
	$(call run_pytest,$(PY),$(PYTEST_ARGS))

lint: setup-python
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

# Coverage-guided fuzzing with atheris (installed on demand: the `fuzz` extra): the SEG reader, then the
# NRRD, NIfTI and label-table readers (FUZZ_SECONDS each; FUZZ_TARGETS to choose, e.g. FUZZ_TARGETS=nrrd).
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?= reader nrrd nifti labeltable
fuzz: setup
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install --quiet -e ".[fuzz]"
	@set -e; for target in $(FUZZ_TARGETS); do \
	  echo "== fuzzing $$target for $(FUZZ_SECONDS) s"; \
	  if [ "$$target" = reader ]; then $(PY) Testing/fuzz_reader.py -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS); \
	  else $(PY) Testing/fuzz_formats.py $$target -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS); fi; \
	done

## ---- cleanup -------------------------------------------------------------------------------------

clean:
	rm -rf out build dist bench/results .pytest_cache .hypothesis .ruff_cache .mypy_cache *.egg-info
	find . -path ./$(VENV) -prune -o -path ./$(VENV_COMPAT) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VENV_COMPAT) Testing/js/node_modules
