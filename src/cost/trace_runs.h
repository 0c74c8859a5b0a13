// From traces to priced runs: which attention policy and model a trace was
// made with, its token counts (re-tokenised when the trace has none, as
// Kinetics' own files), and the RunConfig the frontier evaluates.
#pragma once
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "cost/cost.h"
#include "cost/frontier.h"
#include "eval/trace.h"

namespace kf {
class Tokenizer;
}

namespace kf::cost {

// Kinfer header "attn" ({"policy": dense|local|blocktopk|topk|sparse,
// "page_size", "local_pages", "topk_pages", "budget"}) or Kinetics metadata
// (attn_local, attn_block_size, attn_block_topk, attn_topk) -> cost policy:
//   dense -> dense; local -> sparse B = P(1 + local_pages);
//   topk (oracle) -> sparse B = P(1 + local_pages + topk_pages);
//   blocktopk -> blocktopk T = P(1 + local_pages) (sink + local), P, K;
//   Kinetics: attn_block_topk -> blocktopk T = attn_local, P = attn_block_size
//   (16 if absent), K; attn_local alone -> sparse B = attn_local + attn_topk.
// `where` names the trace in errors.
AttnSpec attn_spec_from_json(const nlohmann::json& attn, const std::string& where);

// The model to price a trace with: its header's cost_model block, else a
// preset named in its model field or its file name. nullopt when none is found.
std::optional<ModelShape> model_shape_for_trace(const eval::Trace& trace);

// Fills missing prompt_tokens / gen_tokens: the prompt is the trace's prompt
// template (Kinetics files: kinetics-math) rendered as one user message through
// the tokenizer's chat template with the generation prompt; the generation is
// the response text encoded alone. Returns how many samples were filled.
size_t fill_token_counts(eval::Trace& trace, const Tokenizer& tokenizer);

// Requires token counts on every sample. Predictions fill the vote (Kinetics
// rows have none: `predict(text)` extracts them when given).
using Predict = std::function<std::string(const std::string& text)>;
RunConfig run_from_trace(const eval::Trace& trace, const ModelShape& model, const AttnSpec& attn,
                         const Predict& predict = {});

// The cost of a problem's samples (prompt shared by the n samples; each
// sample priced at its own length): cost_json of the expected cost,
// with "n" added. Samples need token counts.
nlohmann::json price_problem(const eval::TraceProblem& problem, const ModelShape& model, const AttnSpec& attn,
                             double intensity);

}  // namespace kf::cost
