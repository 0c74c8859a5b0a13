#include "eval/metrics.h"

#include "util/error.h"

namespace kf::eval {

namespace {

std::string_view trim(std::string_view s) {
  const auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

// The vote among samples [begin, begin + count).
Vote vote_range(const std::vector<std::string>& predictions, const std::vector<bool>& correct, size_t begin,
                size_t count, const SameAnswer& same) {
  struct Bucket {
    size_t first;  // index of the first sample with this answer
    int64_t votes;
  };
  std::vector<Bucket> buckets;
  for (size_t i = begin; i < begin + count; ++i) {
    const std::string_view p = trim(predictions[i]);
    if (p.empty()) continue;  // no answer: abstains
    bool found = false;
    for (Bucket& b : buckets) {
      const std::string_view q = trim(predictions[b.first]);
      if (same ? same(p, q) : p == q) {
        ++b.votes;
        found = true;
        break;
      }
    }
    if (!found) buckets.push_back({i, 1});
  }
  Vote v;
  for (const Bucket& b : buckets) {
    if (b.votes > v.votes) {  // strict: ties keep the earlier answer
      v.votes = b.votes;
      v.prediction = std::string(trim(predictions[b.first]));
      v.correct = correct[b.first];
    }
  }
  return v;
}

}  // namespace

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  KF_CHECK(n >= 1 && c >= 0 && c <= n, "pass@k needs 0 <= correct <= samples (got {} of {})", c, n);
  KF_CHECK(k >= 1 && k <= n, "pass@k needs 1 <= k <= samples (got k={} with {} samples)", k, n);
  if (n - c < k) return 1.0;  // every k-subset holds a correct sample
  // C(n-c,k)/C(n,k) = prod_{i=n-c+1..n} (1 - k/i)
  double miss = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i) miss *= 1.0 - double(k) / double(i);
  return 1.0 - miss;
}

Vote majority_vote(const std::vector<std::string>& predictions, const std::vector<bool>& correct,
                   const SameAnswer& same) {
  KF_CHECK(predictions.size() == correct.size(), "majority vote: {} predictions but {} correctness flags",
           predictions.size(), correct.size());
  return vote_range(predictions, correct, 0, predictions.size(), same);
}

double majority_at_k(const std::vector<std::string>& predictions, const std::vector<bool>& correct, int64_t k,
                     const SameAnswer& same) {
  KF_CHECK(predictions.size() == correct.size(), "maj@k: {} predictions but {} correctness flags",
           predictions.size(), correct.size());
  const int64_t n = int64_t(predictions.size());
  KF_CHECK(k >= 1 && k <= n, "maj@k needs 1 <= k <= samples (got k={} with {} samples)", k, n);
  const int64_t groups = n / k;
  int64_t wins = 0;
  for (int64_t g = 0; g < groups; ++g) {
    wins += vote_range(predictions, correct, size_t(g * k), size_t(k), same).correct ? 1 : 0;
  }
  return double(wins) / double(groups);
}

std::vector<int64_t> powers_of_two_up_to(int64_t max_n) {
  std::vector<int64_t> out;
  for (int64_t k = 1; k <= max_n; k *= 2) out.push_back(k);
  if (max_n >= 1 && out.back() != max_n) out.push_back(max_n);
  return out;
}

}  // namespace kf::eval
