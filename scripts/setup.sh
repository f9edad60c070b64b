#!/usr/bin/env bash
# Installs what seginf needs on a Debian/Ubuntu machine, when missing: OpenBLAS (linked by the
# library), a C and C++ compiler with AddressSanitizer (the C ABI tests), a JDK with the JNI
# headers (the Java example, examples-c/java, built and run by the C ABI tests), python3 with venv
# support (the Python module's tests, when numpy and pytest are not importable already: they go
# into a venv, see scripts/test.sh), and checks for cargo.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "seginf needs a Rust toolchain (cargo): see https://rustup.rs" >&2
  exit 1
fi
need=()
dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# The JDK: javac on the PATH with include/jni.h beside it (or under JAVA_HOME).
jdk_ok() {
  local home="${JAVA_HOME:-}"
  if [ -n "$home" ] && [ -f "$home/include/jni.h" ]; then return 0; fi
  command -v javac >/dev/null 2>&1 || return 1
  home="$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")"
  [ -f "$home/include/jni.h" ]
}
jdk_ok || need+=(default-jdk-headless)
# Python tests: python3 itself, and `python3 -m venv` (Debian's python3-venv) unless numpy and
# pytest are importable already.
command -v python3 >/dev/null 2>&1 || need+=(python3)
if ! python3 -c "import numpy, pytest" >/dev/null 2>&1 && ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
