#!/usr/bin/env bash
# Installs what seginf needs on a Debian/Ubuntu machine, when missing: OpenBLAS (linked by the
# library), a C and C++ compiler with AddressSanitizer (the C ABI tests), and checks for cargo.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "seginf needs a Rust toolchain (cargo): see https://rustup.rs" >&2
  exit 1
fi
need=()
dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
