// libFuzzer target: the GGUF parser, its metadata getters, the GGUF -> config
// mapping and dequantisation of (small) tensors. Any kf::Error is a clean
// rejection; anything else (crash, sanitizer report, other exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "util/dequant.h"
#include "io/gguf.h"
#include "model/config_load.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kf::GgufFile f = kf::GgufFile::from_bytes(data, size, "fuzz.gguf");
    for (const kf::GgufKV& kv : f.metadata()) {
      (void)f.get_json(kv.key, 64);
      if (kv.type == kf::GgufType::ARRAY && kv.elem_type == kf::GgufType::STRING) (void)f.get_str_array(kv.key);
      try {
        (void)f.get_i64(kv.key);
      } catch (const kf::Error&) {
      }
    }
    for (const kf::GgufTensor& t : f.tensors()) {
      if (t.numel > (1 << 16)) continue;
      std::vector<float> out(static_cast<size_t>(t.numel));
      kf::dequantize(t.dtype, t.data, out.data(), t.numel);
    }
    (void)kf::config_from_gguf(f);
  } catch (const kf::Error&) {
  }
  return 0;
}
