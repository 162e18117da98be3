# bpstream: `make demo` runs the demonstration, `make test` runs every test.
# Both set up what they need: a virtual environment in .venv (packages from PyPI) with
# bpstream built (Swift core + C extension) and installed into it.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test swift-test python-test bench examples install clean

demo: install
	$(VPY) -m bpstream.demo

test: swift-test python-test

swift-test:
	swift test
	swift run swift-producer-consumer

python-test: install
	$(VPY) -m pytest python/tests -q

bench: install
	$(VPY) -m pip install --quiet --disable-pip-version-check janus  # a peer to compare with
	$(VPY) python/benchmarks/bench.py
	$(VPY) python/benchmarks/bench_native.py

# The example native producer (a C extension using bpstream's C API capsule).
examples: install
	$(VPY) examples/native_producer/build.py

install: $(VENV)/bin/activate
	$(VPY) -m pip install --quiet --disable-pip-version-check .

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check pytest hypothesis

clean:
	rm -rf .build build $(VENV) python/bpstream/*.so python/bpstream.egg-info
