/*
 * Fuzz harnesses: the libFuzzer entry points and what they share
 * SPDX-License-Identifier: MIT
 *
 * Each harness defines LLVMFuzzerTestOneInput (and may define
 * LLVMFuzzerInitialize).  Built with clang's -fsanitize=fuzzer by
 * scripts/fuzz.sh (meson option -Dfuzzing=true), they are fuzzers; built
 * normally they link replay-main.c and make check replays their corpora
 * and regression inputs (tests/fuzz/corpus/<name>/,
 * tests/fuzz/regressions/<name>/) under ASan/UBSan.  See docs/fuzzing.md.
 *
 * Every input starts from the same state and leaves none behind (the
 * context, nodes and sockets are torn down), so that a crash reproduces
 * from its input alone.
 */
#ifndef STRATA_TESTS_FUZZ_H
#define STRATA_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include "util/options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Harnesses run as root: no input may name a file, device or directory.
 * True when @opts (recursively) holds a member that names one
 * ("filename", "config", "path", "dir", "file" as a string that is not a
 * node reference is allowed: a child's node-name). */
bool fuzz_opts_touch_files(const OptNode *opts);

/* True when @opts (recursively) asks for what costs on purpose: a mem
 * node over 64 MiB (mem allocates its size), or a latency-ns (null, mem)
 * over 10 ms, which delays every I/O by up to an hour and runs an input
 * into libFuzzer's timeout (the first CPU-hour found exactly that: 501 s
 * per request). */
bool fuzz_opts_too_costly(const OptNode *opts);

/* Run @ctx's loop until nothing is left to do (bounded). */
typedef struct StrataContext StrataContext;
void fuzz_run_until_idle(StrataContext *ctx);

#endif
