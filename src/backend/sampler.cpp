#include "backend/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "util/error.h"

namespace kf {

void SamplingParams::validate() const {
  KF_CHECK(temperature >= 0.f && std::isfinite(temperature), "temperature must be >= 0 (got {})", temperature);
  KF_CHECK(top_k >= 0, "top-k must be >= 0 (got {})", top_k);
  KF_CHECK(top_p > 0.f && top_p <= 1.f, "top-p must be in (0, 1] (got {})", top_p);
  KF_CHECK(min_p >= 0.f && min_p <= 1.f, "min-p must be in [0, 1] (got {})", min_p);
  KF_CHECK(repetition_penalty > 0.f, "repetition penalty must be > 0 (got {})", repetition_penalty);
  KF_CHECK(std::isfinite(presence_penalty), "presence penalty must be finite");
  KF_CHECK(std::isfinite(frequency_penalty), "frequency penalty must be finite");
}

void Sampler::apply_penalties(std::span<float> logits, const SamplingParams& p, std::span<const int> context,
                              std::span<const int> generated) {
  const int vocab = static_cast<int>(logits.size());
  auto penalise = [&](std::span<const int> toks, auto&& fn) {
    mark_.assign(vocab, 0);
    for (int t : toks)
      if (t >= 0 && t < vocab && !mark_[t]) {
        mark_[t] = 1;
        fn(logits[t]);
      }
  };
  if (p.repetition_penalty != 1.f)
    penalise(context, [&](float& l) { l = l > 0.f ? l / p.repetition_penalty : l * p.repetition_penalty; });
  if (p.presence_penalty != 0.f) penalise(generated, [&](float& l) { l -= p.presence_penalty; });
  // One subtraction per occurrence, in order: the same floats whatever order a
  // parallel backend adds them in (every term is the same -frequency).
  if (p.frequency_penalty != 0.f)
    for (int t : generated)
      if (t >= 0 && t < vocab) logits[t] -= p.frequency_penalty;
}

// With top-k, the kept ids are among those whose logit is at least the k-th
// largest minus a margin: a logit further below has a probability strictly
// below the k-th's (the margin over T is far above the rounding of z and of
// exp), so it can neither be kept nor tie. Restricting the work (exp, the
// selection) to them changes no result. Returns their count in ids_
// (ascending), or 0 when the shortcut does not apply (no top-k, NaNs in the
// way, or a k-th probability that underflows to 0, where ties at 0 go by id):
// then every id is a candidate. mx: the largest logit.
int Sampler::top_k_candidates(std::span<const float> logits, const SamplingParams& p, float mx) {
  const int vocab = static_cast<int>(logits.size()), k = p.top_k;
  if (k <= 0 || k >= vocab / 4 || !std::isfinite(mx)) return 0;
  heap_.clear();  // min-heap of the k largest logits seen
  for (float v : logits) {
    if (std::isnan(v)) return 0;
    if (static_cast<int>(heap_.size()) < k) {
      heap_.push_back(v);
      std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
    } else if (v > heap_.front()) {
      std::pop_heap(heap_.begin(), heap_.end(), std::greater<float>());
      heap_.back() = v;
      std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
    }
  }
  if ((static_cast<double>(heap_.front()) - mx) / p.temperature < -700.0) return 0;
  const double cut = static_cast<double>(heap_.front()) - 1e-3 * (1.0 + p.temperature);
  int n = 0;
  for (int i = 0; i < vocab; ++i)
    if (static_cast<double>(logits[i]) >= cut) ids_[n++] = i;
  return n;
}

int Sampler::filter(std::span<float> logits, const SamplingParams& p, std::span<const int> context,
                    std::span<const int> generated) {
  const int vocab = static_cast<int>(logits.size());
  KF_CHECK(vocab > 0, "sampling from empty logits");
  apply_penalties(logits, p, context, generated);

  ids_.resize(vocab);
  probs_.resize(vocab);
  int best = 0;
  for (int i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;  // NaN never wins; ties -> lowest id
  if (p.temperature == 0.f) {
    ids_[0] = best;
    kept_.assign(1, 1.0);
    return 1;
  }
  // Unnormalised probabilities, indexed by id; ids_ is the candidate order
  // (prob desc, id asc once sorted) until the kept set is known.
  const double inv_t = 1.0 / p.temperature, mx = logits[best];
  int n = top_k_candidates(logits, p, logits[best]);
  if (n == 0) {
    n = vocab;
    for (int i = 0; i < vocab; ++i) ids_[i] = i;
  }
  for (int j = 0; j < n; ++j) {
    const double z = (static_cast<double>(logits[ids_[j]]) - mx) * inv_t;
    probs_[ids_[j]] = std::isnan(z) ? 0.0 : std::exp(z);
  }
  auto before = [&](int a, int b) { return probs_[a] != probs_[b] ? probs_[a] > probs_[b] : a < b; };
  bool sorted = false;
  if (p.top_k > 0 && p.top_k < n) {
    std::nth_element(ids_.begin(), ids_.begin() + p.top_k, ids_.begin() + n, before);
    n = p.top_k;
    std::sort(ids_.begin(), ids_.begin() + n, before);
    sorted = true;
  }
  if (p.top_p < 1.f) {
    double total = 0;
    for (int j = 0; j < n; ++j) total += probs_[ids_[j]];
    // Sort a growing prefix until it holds top_p of the mass (exact: the
    // order is total, so the nucleus does not depend on the prefix size).
    int k = sorted ? n : std::min(n, 64);
    for (;;) {
      if (!sorted) {
        std::nth_element(ids_.begin(), ids_.begin() + k - 1, ids_.begin() + n, before);
        std::sort(ids_.begin(), ids_.begin() + k, before);
      }
      double cum = 0;
      int keep = -1;
      for (int j = 0; j < k; ++j) {
        cum += probs_[ids_[j]];
        if (cum >= p.top_p * total) {
          keep = j + 1;
          break;
        }
      }
      if (keep > 0 || k == n) {
        n = keep > 0 ? keep : n;
        break;
      }
      k = std::min(n, k * 4);
    }
  }
  if (p.min_p > 0.f) {
    double cut = p.min_p * 1.0;  // p_max is exp(0) = 1 before normalisation
    int m = 0;
    for (int j = 0; j < n; ++j)
      if (probs_[ids_[j]] >= cut) ids_[m++] = ids_[j];
    n = m;
  }
  // Draw order: ascending token id, so a backend that finds the kept set by
  // thresholds (no sort) walks the same CDF (Backend::sample).
  if (p.top_k > 0 || p.top_p < 1.f) std::sort(ids_.begin(), ids_.begin() + n);
  // (ids_[j], kept_[j]) pairs in ascending id order.
  kept_.resize(n);
  for (int j = 0; j < n; ++j) kept_[j] = probs_[ids_[j]];
  return n;
}

int Sampler::sample(std::span<float> logits, const SamplingParams& p, std::span<const int> context,
                    std::span<const int> generated, double u) {
  int n = filter(logits, p, context, generated);
  if (n == 1) return ids_[0];
  double total = 0;
  for (int j = 0; j < n; ++j) total += kept_[j];
  double target = u * total, cum = 0;
  for (int j = 0; j < n; ++j) {
    cum += kept_[j];
    if (cum > target) return ids_[j];
  }
  return ids_[n - 1];
}

void Sampler::distribution(std::span<float> logits, const SamplingParams& p, std::span<const int> context,
                           std::span<const int> generated, std::vector<int>& ids, std::vector<double>& probs) {
  int n = filter(logits, p, context, generated);
  double total = 0;
  for (int j = 0; j < n; ++j) total += kept_[j];
  ids.assign(ids_.begin(), ids_.begin() + n);
  probs.resize(n);
  for (int j = 0; j < n; ++j) probs[j] = kept_[j] / total;
}

}  // namespace kf
