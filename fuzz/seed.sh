#!/usr/bin/env bash
# Writes the seed corpora to fuzz/corpus/<target>/: valid snapshots from the writer, and small
# valid inputs of every format the builder reads (needs pyarrow).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p snapkv-format --test corruption -- --ignored --exact write_fuzz_seeds
python3 fuzz/seed_inputs.py
