// Accuracy metrics over repeated samples of one problem.
//
// pass_at_k: the unbiased coverage estimator of Chen et al. (2021) from n
// samples with c correct, 1 - C(n-c, k) / C(n, k), computed as the product
// prod_{i=n-c+1..n} (1 - k/i) so it never forms huge binomials.
// majority: the vote among extracted predictions (empty ones abstain); maj@k
// averages the vote over the floor(n/k) disjoint consecutive groups of k
// samples, so it uses every sample and needs no randomness.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kf::eval {

// Requires 0 <= c <= n and 1 <= k <= n; throws kf::Error otherwise.
double pass_at_k(int64_t n, int64_t c, int64_t k);

struct Vote {
  std::string prediction;  // the answer with the most votes ("" when nobody answered)
  int64_t votes = 0;
  bool correct = false;    // the winning answer's correctness
};

// Two predictions are the same answer when `same` says so (default: equal
// strings after trimming). Ties go to the answer seen first.
using SameAnswer = std::function<bool(std::string_view, std::string_view)>;

Vote majority_vote(const std::vector<std::string>& predictions, const std::vector<bool>& correct,
                   const SameAnswer& same = {});

// Mean over disjoint groups of k samples of the group vote's correctness.
double majority_at_k(const std::vector<std::string>& predictions, const std::vector<bool>& correct, int64_t k,
                     const SameAnswer& same = {});

// 1, 2, 4, ... up to and including max_n (max_n itself appended when it is not a power of two).
std::vector<int64_t> powers_of_two_up_to(int64_t max_n);

}  // namespace kf::eval
