// Token sampling from one row of logits: penalties, temperature, top-k,
// top-p, min-p, then one Philox uniform keyed by (seed, request, sample,
// step), so a sample's tokens never depend on the rest of the batch.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace kf {

struct SamplingParams {
  float temperature = 1.f;          // 0 = greedy (argmax, ties -> lowest id)
  int top_k = 0;                    // 0 = off
  float top_p = 1.f;                // 1 = off
  float min_p = 0.f;                // 0 = off; keep p >= min_p * p_max
  float repetition_penalty = 1.f;   // HF style over prompt + generated: l>0 ? l/r : l*r
  float presence_penalty = 0.f;     // OpenAI style over generated tokens: l -= penalty (once per distinct token)
  float frequency_penalty = 0.f;    // OpenAI style over generated tokens: l -= penalty per occurrence
  uint64_t seed = 0;

  void validate() const;  // throws kf::Error naming the bad field
};

// Keeps its scratch between calls (no allocation once warm). One per thread.
class Sampler {
 public:
  // Picks a token from logits [vocab] (modified in place). `context` (prompt +
  // generated) feeds the repetition penalty, `generated` the presence penalty.
  // u in [0, 1) is the Philox draw for this (request, sample, step). The kept
  // set is defined over the total order (prob desc, id asc); the draw is the
  // inverse CDF of u over the kept tokens in ascending token id (the order a
  // GPU can scan without sorting: Backend::sample gives the same token).
  int sample(std::span<float> logits, const SamplingParams& p, std::span<const int> context,
             std::span<const int> generated, double u);

  // The penalties alone, in place: repetition over context, then presence
  // and frequency over generated (what Backend::apply_penalties computes).
  void apply_penalties(std::span<float> logits, const SamplingParams& p, std::span<const int> context,
                       std::span<const int> generated);

  // Probabilities after penalties/temperature/top-k/top-p/min-p, for tests:
  // the kept ids in ascending id order (the draw order of sample()) and their
  // renormalised probabilities.
  void distribution(std::span<float> logits, const SamplingParams& p, std::span<const int> context,
                    std::span<const int> generated, std::vector<int>& ids, std::vector<double>& probs);

 private:
  int filter(std::span<float> logits, const SamplingParams& p, std::span<const int> context,
             std::span<const int> generated);  // fills ids_/probs_, returns kept count
  int top_k_candidates(std::span<const float> logits, const SamplingParams& p, float mx);  // fills ids_
  std::vector<int> ids_;
  std::vector<float> heap_;    // top_k_candidates' k largest logits
  std::vector<double> probs_;  // [vocab] by id
  std::vector<double> kept_;   // [kept] probs of ids_[0..kept), ascending id
  std::vector<uint8_t> mark_;
};

}  // namespace kf
