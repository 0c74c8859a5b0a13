#include "util/progress.h"

#include <algorithm>
#include <cstdio>
#include <fmt/format.h>
#include <unistd.h>

namespace kf {

Progress::Progress(std::string label, int64_t total, std::string unit, bool force)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  enabled_ = force || isatty(fileno(stderr));
  start_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

std::string Progress::render(const std::string& label, int64_t done, int64_t total, const std::string& unit,
                             double seconds, int width) {
  const double rate = seconds > 0 ? done / seconds : 0;
  std::string s = fmt::format("{} {}", label, done);
  if (total > 0) {
    const double frac = std::min(1.0, static_cast<double>(done) / total);
    const int fill = static_cast<int>(frac * width);
    s = fmt::format("{} [{}{}] {}/{}", label, std::string(fill, '='), std::string(width - fill, ' '), done, total);
  }
  s += fmt::format(" {} {:.1f} {}/s", unit, rate, unit);
  if (total > 0 && rate > 0 && done < total) {
    const int64_t eta = static_cast<int64_t>((total - done) / rate + 0.5);
    s += fmt::format(" ETA {}:{:02d}", eta / 60, eta % 60);
  }
  return s;
}

void Progress::update(int64_t done) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_ < std::chrono::milliseconds(100) && done < total_) return;
  last_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  std::fprintf(stderr, "\r\033[K%s", render(label_, done, total_, unit_, secs, 30).c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::finish() {
  if (drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
  drawn_ = false;
}

}  // namespace kf
