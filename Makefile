# The two commands: `make run` and `make test`. Everything else is a helper for them.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
LISTEN ?= 127.0.0.1:8080
DATA ?= ./nimbus-data

.PHONY: all deps build run test test-fast asan bench bench-cold bench-gateway bench-async bench-events bench-metering fuzz format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	@scripts/run.sh $(BUILD)/nimbus $(LISTEN) $(DATA)

# The full suite: a -Werror build and an ASan/UBSan build, each running every test.
test: build asan
	@scripts/deps.sh --test
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

test-fast: build
	@scripts/deps.sh --test
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DNIMBUS_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

bench: build
	@scripts/deps.sh --bench
	@bench/run.sh $(BUILD)

# Cold starts with the full sandbox against plain fork+exec (needs root).
bench-gateway: build
	@scripts/deps.sh --bench
	@bench/gateway.py $(BUILD)

bench-async: build
	@scripts/deps.sh --bench
	@bench/async.py $(BUILD)

bench-events: build
	@scripts/deps.sh --bench
	@bench/events.py $(BUILD)

bench-metering: build
	@scripts/deps.sh --bench
	@bench/metering.py $(BUILD)

bench-cold: build
	@bench/coldstart.py $(BUILD)

fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DNIMBUS_FUZZ=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@scripts/fuzz.sh build-fuzz 30

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
