# Thin wrapper over meson; see README.md.
.PHONY: all run check build clean bench fuzz

all: build

build:
	scripts/deps.sh
	scripts/build.sh build

run:
	scripts/run.sh

check:
	scripts/test.sh

bench:
	scripts/deps.sh
	scripts/build.sh build-release -Dbuildtype=release -Db_lto=true
	tests/bench/compare

fuzz:
	scripts/fuzz.sh

clean:
	rm -rf build build-asan build-tsan build-release var
