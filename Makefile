# Front door. Everything real happens in CMake/ctest; these targets only chain the steps.
#   make tour    install dependencies, build, run the live tour
#   make test    install dependencies, build (with the libFuzzer targets), run every test, print totals
#   make bench   build and run every benchmark in bench/ (slow; not part of make test)
#   make deb     build the Debian packages ktricks and libktricks-dev
#   make format-check   clang-format --dry-run --Werror over src include tests examples (.clang-format)
BUILD    ?= build
PREFIX   ?= /usr/local
FUZZ_DIR := $(BUILD)/libfuzzer
CMAKE_FLAGS ?=

.PHONY: all deps configure build fuzz test tour bench install deb clean format-check

all: build

deps:
	@scripts/install-deps.sh

configure:
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD)

# libFuzzer needs clang; only the library and the fuzz targets are built there.
fuzz:
	@CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKTRICKS_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_DIR)

# Fails, naming file:line, where clang-format would change anything (Debian 12's clang-format 14).
FORMAT_FILES = $(shell find src include tests examples -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.c' \) | sort)
format-check: deps
	@clang-format --version
	@clang-format --dry-run --Werror $(FORMAT_FILES)

test: deps build fuzz
	@cd $(BUILD) && ctest --output-on-failure --label-exclude bench --timeout 300

tour: deps build
	@$(BUILD)/ktricks tour

bench: deps build
	@set -e; for script in bench/*.sh; do echo "### $$script"; KTRICKS=$(abspath $(BUILD))/ktricks $$script; echo; done

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

# Debian packages ktricks (binary, man pages, completions, docs, units) and libktricks-dev in $(BUILD)/deb.
deb: deps build
	@cd $(BUILD) && cpack -G DEB -B $(abspath $(BUILD))/deb >/dev/null && ls -1 $(abspath $(BUILD))/deb/*.deb

clean:
	rm -rf $(BUILD)
