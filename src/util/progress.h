// Progress: a one-line stderr progress bar with rate and ETA. Drawn only when
// stderr is a terminal (or when forced), redrawn at most 10 times a second,
// and erased on finish() so it never mixes with output.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace kf {

class Progress {
 public:
  // total <= 0: unknown total (no bar, no ETA). unit: e.g. "tok".
  Progress(std::string label, int64_t total, std::string unit, bool force = false);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool enabled() const { return enabled_; }
  void update(int64_t done);  // absolute count
  void finish();              // clears the line (idempotent)

  // "12.3 tok/s ETA 0:42 [=====>    ] 123/512" (exposed for tests).
  static std::string render(const std::string& label, int64_t done, int64_t total, const std::string& unit,
                            double seconds, int width);

 private:
  std::string label_, unit_;
  int64_t total_ = 0;
  bool enabled_ = false;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace kf
