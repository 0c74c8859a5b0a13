#!/usr/bin/env bash
# Builds llama.cpp, the reference kinfer's CPU speed and greedy text are
# compared against, from the copy vendored in the PyPI sdist of
# llama-cpp-python==0.3.36 (llama.cpp commit 0c1e57098): CPU only,
# -DGGML_NATIVE=ON, in a work directory outside the repository (never commit
# that code). Builds llama-bench, llama-batched-bench and the shared libllama
# that tools/make_llamacpp_greedy.py drives through the sdist's ctypes module.
#
#   tools/llamacpp_build.sh [WORK]     WORK defaults to $KINFER_LLAMACPP_WORK,
#                                      else ~/.cache/kinfer/llamacpp
# Prints nothing but progress on stderr; sourcing it sets LLAMACPP_SDIST (the
# unpacked sdist) and LLAMACPP_BIN (the binaries and libraries). Idempotent.
set -euo pipefail

LLAMACPP_VERSION=0.3.36
LLAMACPP_WORK="${1:-${KINFER_LLAMACPP_WORK:-$HOME/.cache/kinfer/llamacpp}}"
LLAMACPP_SDIST="$LLAMACPP_WORK/llama_cpp_python-$LLAMACPP_VERSION"
LLAMACPP_BIN="$LLAMACPP_WORK/build/bin"

llamacpp_log() { printf '\033[1m[llama.cpp]\033[0m %s\n' "$*" >&2; }

llamacpp_build() {
  mkdir -p "$LLAMACPP_WORK"
  local tarball="$LLAMACPP_WORK/llama_cpp_python-$LLAMACPP_VERSION.tar.gz"
  if [[ ! -s "$tarball" ]]; then
    llamacpp_log "downloading the llama-cpp-python==$LLAMACPP_VERSION sdist from PyPI"
    python3 -m pip download --no-binary :all: --no-deps -d "$LLAMACPP_WORK" "llama-cpp-python==$LLAMACPP_VERSION" >&2
  fi
  [[ -d "$LLAMACPP_SDIST" ]] || tar -xzf "$tarball" -C "$LLAMACPP_WORK"
  local src="$LLAMACPP_SDIST/vendor/llama.cpp"
  [[ -f "$src/CMakeLists.txt" ]] || { llamacpp_log "error: no llama.cpp in $src"; return 1; }
  if [[ ! -x "$LLAMACPP_BIN/llama-bench" || ! -x "$LLAMACPP_BIN/llama-batched-bench" ]]; then
    llamacpp_log "building llama-bench and llama-batched-bench (CPU, GGML_NATIVE) in $LLAMACPP_WORK/build"
    cmake -S "$src" -B "$LLAMACPP_WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DBUILD_SHARED_LIBS=ON -DGGML_CUDA=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$LLAMACPP_WORK/build" -j"$(nproc)" --target llama-bench llama-batched-bench >&2
  fi
  [[ -x "$LLAMACPP_BIN/llama-bench" ]] || { llamacpp_log "error: the build made no llama-bench"; return 1; }
}

llamacpp_build
# The commit of the vendored llama.cpp, for the results.
LLAMACPP_COMMIT="$(git -C "$LLAMACPP_SDIST/vendor/llama.cpp" rev-parse --short=9 HEAD 2>/dev/null || echo unknown)"
export LLAMACPP_SDIST LLAMACPP_BIN LLAMACPP_COMMIT
