#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests (CRF oracle, index/query, files) and the
# C/C++ programs of examples-c/ under AddressSanitizer+UBSan (tests/c_abi.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test
