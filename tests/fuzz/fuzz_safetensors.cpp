// libFuzzer target: the safetensors parser (header JSON, offsets, overlap
// checks) and conversion of the float tensors it accepts. Any kf::Error is a
// clean rejection; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "util/dequant.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kf::SafetensorsFile f = kf::SafetensorsFile::from_bytes(data, size, "fuzz.safetensors");
    for (const kf::SafeTensor& t : f.tensors()) {
      if (t.numel > (1 << 16) || !kf::can_dequantize(t.dtype)) continue;
      std::vector<float> out(static_cast<size_t>(t.numel));
      kf::dequantize(t.dtype, t.data, out.data(), t.numel);
    }
  } catch (const kf::Error&) {
  }
  return 0;
}
