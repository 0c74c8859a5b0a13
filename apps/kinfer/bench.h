// `kinfer bench NAME ...`: one function per benchmark, each in bench_NAME.cpp.
// Each prints human-readable results, or one JSON object with --json.
#pragma once
#include <functional>
#include <vector>

namespace kf {
class Backend;
}

namespace kf::cli {
int bench_decode(int argc, char** argv);
int bench_copy(int argc, char** argv);
int bench_attention(int argc, char** argv);
int bench_sample(int argc, char** argv);
int bench_generate(int argc, char** argv);
int bench_tokenize(int argc, char** argv);
// Device-to-device copy bandwidth in GB/s (read + write) of a 512 MiB copy on
// the backend's GPU, the median of 5; throws for other backends.
double measure_copy_gbps(Backend& be);
// Milliseconds per call of step() on the backend's GPU: `warmup` untimed
// calls, then `reps` CUDA-event timings of `iters` calls each, ascending
// (the median is [reps / 2]). CUDA builds only.
std::vector<double> time_step_ms(Backend& be, const std::function<void()>& step, int warmup, int reps, int iters);
// Add one declaration per benchmark here and one row in cmd_bench.cpp's kBenches.
}  // namespace kf::cli
