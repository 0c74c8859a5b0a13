#include "cost/options.h"

#include <charconv>
#include <cmath>

#include "cost/presets.h"
#include "io/checkpoint.h"
#include "model/config_load.h"
#include "util/error.h"

namespace kf::cost {

AttnSpec attn_from_options(const AttnOptions& o) {
  AttnSpec a;
  a.formula = parse_formula(o.attn);
  if (a.formula == Formula::Sparse) {
    KF_CHECK(o.budget > 0, "--attn sparse needs --budget B > 0 (KV tokens per step)");
    a.budget = o.budget;
  } else if (a.formula == Formula::BlockTopk) {
    a.local_tokens = o.local_tokens;
    a.page_size = o.page_size;
    a.topk_pages = o.topk_pages;
    a.int8_summaries = o.summary_dtype == "int8";
    KF_CHECK(o.budget == 0 || o.budget == a.kv_budget(),
             "--budget {} disagrees with blocktopk's B = --local-tokens + --page-size x --topk-pages = {}", o.budget,
             a.kv_budget());
  }
  KF_CHECK(o.summary_dtype == "auto" || a.formula == Formula::BlockTopk,
           "--summary-dtype {} applies to --attn blocktopk only", o.summary_dtype);
  a.validate();
  return a;
}

std::string HardwareOptions::label() const {
  if (intensity >= 0) return fmt::format("intensity {}", intensity);
  return hardware.empty() ? kDefaultHardware : hardware;
}

double intensity_from_options(const HardwareOptions& o) {
  if (o.intensity >= 0) {
    KF_CHECK(std::isfinite(o.intensity), "--intensity must be finite");
    return o.intensity;
  }
  const std::string name = o.hardware.empty() ? kDefaultHardware : o.hardware;
  const auto i = hardware_intensity(name);
  KF_CHECK(i.has_value(), "unknown --hardware '{}' (known: b200, h200, h100; or give --intensity)", name);
  return *i;
}

ResolvedModel resolve_model(const std::string& spec) {
  ResolvedModel r;
  if (auto p = find_model_preset(spec)) {
    r.shape = shape_of(p->config, p->params);
    r.shape.name = p->name;
    r.preset = true;
    return r;
  }
  const Checkpoint ck = open_checkpoint(spec);
  const ParamCounts counts = count_params(ck);
  r.shape = shape_of(load_config(ck), double(counts.kinetics));
  if (r.shape.name.empty()) r.shape.name = ck.path();
  r.params_plain = counts.plain;
  return r;
}

namespace {

template <typename T>
std::vector<T> parse_list(const std::string& text, const std::string& option) {
  std::vector<T> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    const size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    item = a == std::string::npos ? "" : item.substr(a, b - a + 1);
    KF_CHECK(!item.empty(), "{}: empty item in '{}'", option, text);
    T v{};
    if constexpr (std::is_integral_v<T>) {
      // Accept 32768 and 3.2e4 alike, as long as the value is a whole number.
      char* endp = nullptr;
      const double d = std::strtod(item.c_str(), &endp);
      KF_CHECK(endp && *endp == '\0' && std::isfinite(d) && d == std::floor(d),
               "{}: '{}' is not a whole number", option, item);
      v = T(d);
    } else {
      char* endp = nullptr;
      v = std::strtod(item.c_str(), &endp);
      KF_CHECK(endp && *endp == '\0' && std::isfinite(v), "{}: '{}' is not a number", option, item);
    }
    KF_CHECK(v >= 0, "{}: '{}' must be >= 0", option, item);
    out.push_back(v);
    start = end + 1;
  }
  return out;
}

}  // namespace

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option) {
  return parse_list<int64_t>(text, option);
}

std::vector<double> parse_double_list(const std::string& text, const std::string& option) {
  return parse_list<double>(text, option);
}

std::string si(double v) {
  const char* units[] = {"", "K", "M", "G", "T", "P", "E", "Z", "Y"};
  int u = 0;
  double x = std::fabs(v);
  while (x >= 1000 && u < 8) x /= 1000, ++u;
  return fmt::format("{:.3f} {}", v < 0 ? -x : x, units[u]);
}

std::string describe_cost(const Cost& c, const ResolvedModel& model, const AttnSpec& attn, const std::string& hardware,
                          int64_t prompt_len, const std::vector<int64_t>& gen_lens, int64_t n_samples) {
  std::string lens;
  for (size_t i = 0; i < gen_lens.size() && i < 8; ++i) lens += fmt::format("{}{}", i ? "," : "", gen_lens[i]);
  if (gen_lens.size() > 8) lens += fmt::format(",... ({} lengths, mean cost)", gen_lens.size());
  const ModelShape& m = model.shape;
  std::string s;
  s += fmt::format("model      {}  P = {:.4g}{}  Hq {}  Hkv {}  D = {} x {} = {}\n", m.name, m.params,
                   model.params_plain > 0 ? fmt::format(" (plain count {:.4g})", double(model.params_plain)) : "",
                   m.n_heads, m.n_kv_heads, m.head_dim, m.n_layers, int64_t(m.d()));
  s += fmt::format("workload   Lin {}  L {}  N {}\n", prompt_len, lens, n_samples);
  s += fmt::format("attention  {}{}\n", attn.label(),
                   attn.formula == Formula::Dense ? "" : fmt::format("  (KV budget B = {})", attn.kv_budget()));
  s += fmt::format("hardware   {}  I = {} FLOP/byte\n\n", hardware, c.intensity);
  const double e = c.efflops();
  const auto share = [e](double x) { return e > 0 ? 100.0 * x / e : 0.0; };
  s += fmt::format("{:<22}{:>16}{:>16}{:>10}\n", "part", "FLOPs / bytes", "eFLOPs", "share");
  s += fmt::format("{:<22}{:>16}{:>16}{:>9.1f}%\n", "compute: parameters", si(c.param_flops), si(c.param_flops),
                   share(c.param_flops));
  s += fmt::format("{:<22}{:>16}{:>16}{:>9.1f}%\n", "compute: attention", si(c.attn_flops), si(c.attn_flops),
                   share(c.attn_flops));
  if (attn.formula == Formula::BlockTopk)
    s += fmt::format("{:<22}{:>16}{:>16}{:>9.1f}%\n", "compute: page search", si(c.search_flops), si(c.search_flops),
                     share(c.search_flops));
  s += fmt::format("{:<22}{:>15}B{:>16}{:>9.1f}%\n", "memory: KV reads", si(c.attn_bytes),
                   si(c.attn_bytes * c.intensity), share(c.attn_bytes * c.intensity));
  if (attn.formula == Formula::BlockTopk)
    s += fmt::format("{:<22}{:>15}B{:>16}{:>9.1f}%\n", "memory: page summaries", si(c.search_bytes),
                     si(c.search_bytes * c.intensity), share(c.search_bytes * c.intensity));
  s += "\n";
  s += fmt::format("compute  {:.6g} FLOPs ({:.1f}%)\n", c.compute(), share(c.compute()));
  s += fmt::format("memory   {:.6g} bytes x {} = {:.6g} eFLOPs ({:.1f}%)\n", c.memory(), c.intensity,
                   c.memory() * c.intensity, share(c.memory() * c.intensity));
  s += fmt::format("eFLOPs   {:.6g}  ({:.4f} x 1e12)\n", e, e * 1e-12);
  return s;
}

}  // namespace kf::cost
