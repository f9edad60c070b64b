#!/usr/bin/env bash
# The main job: `seginf demo`, the paper's artifact experiment end to end (a synthetic corpus,
# a CRF trained on it, its index, which training labels made it predict B-PER after the
# artifact token); arguments go to it (e.g. `--out DIR` to keep its files). Then the C/C++
# examples against include/seginf.h: a CRF with BIO constraints (Viterbi, marginals,
# entity-level segment losses and gradients), an influence index built, saved, reopened and
# queried, and training with exact influence; and the Java program through its JNI binding.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release --bin seginf -- demo "$@"
echo
echo "== the C ABI examples"
cargo build --release --lib
lib="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in examples-c/*.c examples-c/*.cpp; do
  case "$(basename "$src")" in *null_args.c) continue ;; esac  # the bad-input tests
  exe="$out/$(basename "${src%.*}")"
  case "$src" in
    *.c) cc -std=c99 -O2 -Iinclude "$src" -L"$lib" -lseginf -Wl,-rpath,"$lib" -lm -o "$exe" ;;
    *.cpp) c++ -std=c++17 -O2 -Iinclude "$src" -L"$lib" -lseginf -Wl,-rpath,"$lib" -o "$exe" ;;
  esac
  echo "== $src"
  (cd "$out" && "$exe" "$out")  # examples that save files write them there
done
# The JDK whose headers the JNI glue needs: JAVA_HOME when it has them, else javac's.
jdk="${JAVA_HOME:-}"
if [ -z "$jdk" ] || [ ! -f "$jdk/include/jni.h" ]; then
  jdk="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
fi
echo "== examples-c/java/IndexQuery.java (JNI)"
cc -std=c99 -O2 -shared -fPIC -I"$jdk/include" -I"$jdk/include/linux" -Iinclude \
  examples-c/java/seginf_jni.c -L"$lib" -lseginf -Wl,-rpath,"$lib" -o "$out/libseginf_jni.so"
"$jdk/bin/javac" -d "$out" examples-c/java/SegInf.java examples-c/java/IndexQuery.java
(cd "$out" && "$jdk/bin/java" -Djava.library.path="$out" -cp "$out" IndexQuery "$out")
