#!/usr/bin/env bash
# Writes the seed corpora (valid snapshots from the writer) to fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p snapkv-format --test corruption -- --ignored --exact write_fuzz_seeds
