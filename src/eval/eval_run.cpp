#include "eval/eval_run.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <sstream>
#include <vector>

#include "util/error.h"
#include "util/progress.h"
#include "util/file.h"

namespace kf::eval {

std::string source_git_revision() {
  const std::string cmd = fmt::format("git -C '{}' rev-parse --short HEAD 2>/dev/null", KINFER_SOURCE_DIR);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) return "";
  std::array<char, 64> buf{};
  std::string out;
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), pipe.get()) != nullptr) out += buf.data();
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::array<char, 32> buf{};
  std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf.data();
}

std::optional<Trace> load_for_resume(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) || std::filesystem::file_size(path, ec) == 0) return std::nullopt;
  std::optional<std::string> read = read_file(path);
  KF_CHECK(read, "--resume: cannot read '{}'", path);
  std::string text = std::move(*read);
  // A run killed mid-write leaves a partial last line: drop it so the problem is redone.
  if (!text.empty() && text.back() != '\n') {
    const auto last_newline = text.rfind('\n');
    text.resize(last_newline == std::string::npos ? 0 : last_newline + 1);
    std::filesystem::resize_file(path, text.size(), ec);
    KF_CHECK(!ec, "--resume: cannot drop the partial last line of '{}': {}", path, ec.message());
    if (text.empty()) return std::nullopt;
  }
  Trace t = parse_trace(text, path);
  KF_CHECK(t.format == TraceFormat::Kinfer, "--resume: '{}' is a Kinetics trace, not one kinfer eval wrote", path);
  return t;
}

void check_resume_compatible(const TraceHeader& existing, const TraceHeader& wanted, const std::string& path) {
  auto same = [&](const char* field, const nlohmann::json& a, const nlohmann::json& b) {
    KF_CHECK(a == b, "--resume: '{}' was made with {} {} but this run has {}; use the same options or another --out",
             path, field, a.dump(), b.dump());
  };
  same("model", existing.model, wanted.model);
  same("dataset", existing.dataset, wanted.dataset);
  same("attn", existing.attn, wanted.attn);
  same("sampling", existing.sampling, wanted.sampling);
  same("prompt_template", existing.prompt_template, wanted.prompt_template);
  same("shard", existing.shard, wanted.shard);
}

TraceAppender::TraceAppender(const std::string& path) : path_(path), out_(path, std::ios::app | std::ios::binary) {
  KF_CHECK(out_.good(), "cannot append to trace '{}'", path);
}

void TraceAppender::write(const TraceProblem& problem) {
  // Invalid UTF-8 in model output is replaced, never a reason to lose a problem.
  out_ << problem_json(problem).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n' << std::flush;
  KF_CHECK(out_.good(), "write to trace '{}' failed", path_);
}

EvalProgress::EvalProgress(int64_t total_problems, bool force, bool disable) : total_(total_problems) {
  enabled_ = !disable && (force || isatty(fileno(stderr)));
  start_ = last_ = std::chrono::steady_clock::now();
}

EvalProgress::~EvalProgress() { finish(); }

void EvalProgress::update(int64_t problems_done, int64_t tokens_generated) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_ < std::chrono::milliseconds(100) && problems_done < total_) return;
  last_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double tok_s = secs > 0 ? static_cast<double>(tokens_generated) / secs : 0;
  std::fprintf(stderr, "\r\033[K%s | %.1f tok/s",
               Progress::render("eval", problems_done, total_, "problems", secs, 24).c_str(), tok_s);
  std::fflush(stderr);
  drawn_ = true;
}

void EvalProgress::finish() {
  if (drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
  drawn_ = false;
}

}  // namespace kf::eval
