# bpstream: `make demo` runs the demonstration, `make test` runs every test.
# Both set up what they need: a virtual environment in .venv (packages from PyPI) with
# bpstream built (Swift core + C extension) and installed into it.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test swift-test python-test tsan bench examples install clean

demo: install
	-$(VPY) -m pip install --quiet --disable-pip-version-check rich  # live views on a terminal; optional: offline, the demo prints plain lines
	$(VPY) -m bpstream.demo

test: swift-test python-test tsan

swift-test:
	swift test
	swift run swift-producer-consumer

python-test: install
	$(VPY) -m pytest python/tests -q

# The Swift suite (state machine, stream under threads, ABI) under ThreadSanitizer, in its
# own build folder (about a minute here from a clean build: part of `make test`).
# allocator_may_return_null: tests ask malloc for impossible sizes on purpose and check the
# failure is reported; TSan's allocator would abort on them instead of returning NULL as
# malloc does. It hides no race report. A race fails the run (TSan's exit code 66).
# ForkTests are skipped: a child forked from a process under TSan inherits the sanitizer's
# own runtime state (its background thread and locks) and may hang in it, whatever our
# code does; those tests run in the plain `swift test`.
tsan:
	TSAN_OPTIONS="allocator_may_return_null=1 $$TSAN_OPTIONS" \
		swift test --sanitize=thread --scratch-path .build-tsan --skip ForkTests

bench: install
	$(VPY) -m pip install --quiet --disable-pip-version-check janus culsans \
		aiolimiter pyrate-limiter limits  # peers to compare with
	$(VPY) python/benchmarks/bench.py
	$(VPY) python/benchmarks/bench_native.py
	$(VPY) python/benchmarks/bench_async.py
	$(VPY) python/benchmarks/bench_fanout.py
	$(VPY) python/benchmarks/bench_control.py
	$(VPY) python/benchmarks/bench_flow.py

# The example native producer (a C extension using bpstream's C API capsule).
examples: install
	$(VPY) examples/native_producer/build.py

install: $(VENV)/bin/activate
	$(VPY) -m pip install --quiet --disable-pip-version-check .

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check pytest hypothesis uvloop anyio

clean:
	rm -rf .build .build-tsan build $(VENV) python/bpstream/*.so python/bpstream.egg-info
