#!/usr/bin/env bash
# The main job, for now: build libseginf and run the C/C++ examples against include/seginf.h:
# a CRF with BIO constraints (Viterbi, marginals, entity-level segment losses and gradients),
# an influence index built, saved, reopened and queried, and training with exact influence.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --lib
lib=target/release
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in examples-c/*.c examples-c/*.cpp; do
  case "$(basename "$src")" in *null_args.c) continue ;; esac  # the bad-input tests
  exe="$out/$(basename "${src%.*}")"
  case "$src" in
    *.c) cc -std=c99 -O2 -Iinclude "$src" -L"$lib" -lseginf -Wl,-rpath,"$PWD/$lib" -lm -o "$exe" ;;
    *.cpp) c++ -std=c++17 -O2 -Iinclude "$src" -L"$lib" -lseginf -Wl,-rpath,"$PWD/$lib" -o "$exe" ;;
  esac
  echo "== $src"
  (cd "$out" && "$exe" "$out")  # examples that save files write them there
done
