// `kinfer bench NAME ...`: one function per benchmark, each in bench_NAME.cpp.
// Each prints human-readable results, or one JSON object with --json.
#pragma once

namespace kf::cli {
// Add one declaration per benchmark here and one row in cmd_bench.cpp's kBenches.
}  // namespace kf::cli
