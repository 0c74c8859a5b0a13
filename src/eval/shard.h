// Runs across machines: `kinfer eval --shard I/N` runs every N-th problem of
// the selection, starting at the I-th, into its own trace; `kinfer merge`
// joins the N shard traces into the trace one run would have written. No
// networking: a scheduler (a Slurm job array, say) starts the N shards with
// the same flags and I from its task index; the merge checks that they belong
// to one run and cover it exactly.
//
// A shard's header records {"index": I, "count": N, "selected": problems in
// the whole selection, "ids": its own problem ids in selection order}
// (TraceHeader::shard). The Philox key of a problem is its index in the data
// set, so a problem's samples do not depend on the shard that ran it.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/dataset.h"
#include "eval/trace.h"

namespace kf::eval {

struct Shard {
  int index = 0, count = 1;
  bool whole() const { return count == 1; }
};

// "I/N" with 0 <= I < N (errors name --shard).
Shard parse_shard(const std::string& text);
// Problems index, index + count, index + 2 count, ... of the selection.
std::vector<Problem> shard_problems(const std::vector<Problem>& selected, const Shard& shard);
// The header record of `shard` of a run that selected `selected` problems
// and gave this shard `mine`.
nlohmann::json shard_json(const Shard& shard, size_t selected, const std::vector<Problem>& mine);

// One trace of the whole run from its shard traces (in any order). Checks
// that every file is a shard of the same run: the same model, data set,
// attention, sampling (and seed), prompt template, cost model and selection;
// every index 0..N-1 once; each shard holding exactly its problems (a gap is
// a shard cut short, an overlap a problem in two files, a duplicate one
// problem twice); errors name the files, shards and problems. The problems
// come out in selection order; the header is the run's with the shard record
// replaced by "merged_from" (each file's path, git and creation time).
// `warnings` gets the differences that do not stop a merge (the shards were
// built from different git revisions).
Trace merge_shards(const std::vector<Trace>& shards, std::vector<std::string>* warnings = nullptr);

// Throws when `trace` is a single shard (frontier and plan need the whole
// run): the message says how to merge. `what` names the command.
void require_whole(const Trace& trace, const char* what);

}  // namespace kf::eval
