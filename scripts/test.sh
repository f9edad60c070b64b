#!/usr/bin/env bash
# Runs every test: the Rust unit and integration tests (CRF oracle, index/query, files) and the
# C/C++ programs of examples-c/ under AddressSanitizer+UBSan (tests/c_abi.rs), then the Python
# module's tests (python/tests, pytest) against the release library.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test

# Python: the release library, and a python with numpy and pytest (python3 itself when it has
# them, else a venv under target/py-venv, made and filled once).
cargo build --release --lib
lib="${CARGO_TARGET_DIR:-target}/release/libseginf.so"
py=python3
if ! python3 -c "import numpy, pytest" >/dev/null 2>&1; then
  venv=target/py-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python" -c "import numpy, pytest" >/dev/null 2>&1; then
    echo "installing numpy and pytest into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check numpy pytest
  fi
  py="$venv/bin/python"
fi
SEGINF_LIB="$(realpath "$lib")" "$py" -m pytest python/tests -q
