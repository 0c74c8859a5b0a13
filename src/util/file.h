// Whole-file reads. Returns nullopt when the file cannot be opened, so each
// caller keeps its own error message naming what the file was for.
#pragma once
#include <optional>
#include <string>

namespace kf {
std::optional<std::string> read_file(const std::string& path);
}  // namespace kf
