# Sourced by the GPU-machine scripts (gpu.sh, ab.sh, device_full.sh): what the
# GPU image lacks, from the carried build-devdeps/ folder of the tree at $1.
#   devdeps_debs ROOT      Debian packages (pcre2, utf8proc, asio; `apt-get download`ed
#                          into build-devdeps/debs) unpacked under R=/tmp/devroot, with
#                          pkg-config and the loader pointed there
#   devdeps_cutlass ROOT   CUTLASS's headers for the decode GEMMs (the image has no
#                          nvidia-cutlass and no PyPI): the wheel in build-devdeps
#                          (pip download nvidia-cutlass==4.2.0.0 --no-deps -d build-devdeps),
#                          unpacked once and found by CMake through KINFER_CUTLASS_ROOT
R=/tmp/devroot

devdeps_debs() {
  local f
  for f in "$1"/build-devdeps/debs/*.deb; do dpkg -x "$f" $R; done
  export PKG_CONFIG_PATH=$R/usr/lib/x86_64-linux-gnu/pkgconfig PKG_CONFIG_SYSROOT_DIR=$R
  export LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
}

devdeps_cutlass() {
  local whl
  whl=$(ls "$1"/build-devdeps/nvidia_cutlass-*.whl 2>/dev/null | head -1)
  [[ -n $whl ]] || return 0
  [[ -d /tmp/cutlass_whl/cutlass_library ]] || python3 -m zipfile -e "$whl" /tmp/cutlass_whl
  export KINFER_CUTLASS_ROOT=/tmp/cutlass_whl/cutlass_library/source
}
