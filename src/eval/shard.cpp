#include "eval/shard.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <set>

#include "util/error.h"

namespace kf::eval {

using nlohmann::json;

Shard parse_shard(const std::string& text) {
  const size_t slash = text.find('/');
  Shard s;
  bool ok = slash != std::string::npos;
  try {
    size_t a = 0, b = 0;
    if (ok) {
      s.index = std::stoi(text.substr(0, slash), &a);
      s.count = std::stoi(text.substr(slash + 1), &b);
      ok = a == slash && b == text.size() - slash - 1;
    }
  } catch (const std::exception&) {
    ok = false;
  }
  KF_CHECK(ok, "--shard '{}': expected I/N (shard I of N, counting from 0), e.g. 0/4", text);
  KF_CHECK(s.count >= 1 && s.index >= 0 && s.index < s.count,
           "--shard {}: the index must be in [0, {}) (shards count from 0: 0/{} .. {}/{})", text, s.count, s.count,
           s.count - 1, s.count);
  return s;
}

std::vector<Problem> shard_problems(const std::vector<Problem>& selected, const Shard& shard) {
  std::vector<Problem> out;
  for (size_t i = static_cast<size_t>(shard.index); i < selected.size(); i += static_cast<size_t>(shard.count))
    out.push_back(selected[i]);
  return out;
}

json shard_json(const Shard& shard, size_t selected, const std::vector<Problem>& mine) {
  json ids = json::array();
  for (const Problem& p : mine) ids.push_back(p.id);
  return {{"index", shard.index}, {"count", shard.count}, {"selected", selected}, {"ids", ids}};
}

namespace {

// The parts of a shard record merge relies on, checked.
struct ShardInfo {
  int index = 0, count = 0;
  size_t selected = 0;
  std::vector<std::string> ids;
};

ShardInfo shard_info(const Trace& t) {
  KF_CHECK(t.format == TraceFormat::Kinfer, "{}: a Kinetics trace, not a shard written by kinfer eval --shard",
           t.path);
  const json& s = t.header.shard;
  KF_CHECK(!s.is_null(), "{}: not a shard (its header has no 'shard'): only traces of kinfer eval --shard I/N merge",
           t.path);
  ShardInfo info;
  try {
    // Integers (a float's cast to int is undefined past its range), in range: checked below.
    auto integer = [&](const char* k) {
      const json& v = s.at(k);
      KF_CHECK(v.is_number_integer(), "{}: malformed 'shard' in the header ({}): '{}' must be an integer", t.path,
               s.dump(), k);
      return v.get<int>();
    };
    info.index = integer("index");
    info.count = integer("count");
    info.selected = s.at("selected").get<size_t>();
    info.ids = s.at("ids").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    fail("{}: malformed 'shard' in the header ({}): {}", t.path, s.dump(), e.what());
  }
  KF_CHECK(info.count >= 1 && info.index >= 0 && info.index < info.count, "{}: shard {}/{} is not a valid shard",
           t.path, info.index, info.count);
  return info;
}

std::string label(const Trace& t, const ShardInfo& s) { return fmt::format("{} (shard {}/{})", t.path, s.index, s.count); }

// The run's settings that every shard must share.
void check_same_run(const Trace& a, const ShardInfo& sa, const Trace& b, const ShardInfo& sb) {
  auto same = [&](const char* field, const json& x, const json& y) {
    KF_CHECK(x == y, "{} and {} are not shards of one run: {} {} vs {}", label(a, sa), label(b, sb), field, x.dump(),
             y.dump());
  };
  same("model", a.header.model, b.header.model);
  same("dataset", a.header.dataset, b.header.dataset);
  same("attn", a.header.attn, b.header.attn);
  same("sampling", a.header.sampling, b.header.sampling);
  same("prompt_template", a.header.prompt_template, b.header.prompt_template);
  same("cost_model", a.header.cost_model, b.header.cost_model);
  same("answer_style", a.header.extra.value("answer_style", json()), b.header.extra.value("answer_style", json()));
  same("shard count", sa.count, sb.count);
  same("selected problems", sa.selected, sb.selected);
}

}  // namespace

Trace merge_shards(const std::vector<Trace>& shards, std::vector<std::string>* warnings) {
  KF_CHECK(!shards.empty(), "merge: no shard traces given");
  std::vector<ShardInfo> info;
  for (const Trace& t : shards) info.push_back(shard_info(t));
  const int count = info[0].count;
  std::vector<const Trace*> by_index(count, nullptr);
  std::vector<const ShardInfo*> info_of(count, nullptr);
  std::set<std::string> gits;
  for (size_t k = 0; k < shards.size(); ++k) {
    check_same_run(shards[0], info[0], shards[k], info[k]);
    const int i = info[k].index;
    KF_CHECK(by_index[i] == nullptr, "merge: {} and {} are both shard {}/{}", by_index[i] ? by_index[i]->path : "",
             shards[k].path, i, count);
    by_index[i] = &shards[k];
    info_of[i] = &info[k];
    gits.insert(shards[k].header.git);
  }
  std::vector<int> missing;
  for (int i = 0; i < count; ++i)
    if (!by_index[i]) missing.push_back(i);
  KF_CHECK(missing.empty(), "merge: shard{} {} of {} missing (run them with eval --shard I/{} and the same flags)",
           missing.size() > 1 ? "s" : "", fmt::join(missing, ", "), count, count);

  // Each shard's problems are exactly its ids; the ids of all shards are the
  // selection, each once, and shard i holds selection positions i, i + N, ...
  std::map<std::string, int> owner;
  size_t total = 0;
  for (int i = 0; i < count; ++i) {
    const ShardInfo& s = *info_of[i];
    const size_t expected = s.selected > static_cast<size_t>(i) ? (s.selected - i + count - 1) / count : 0;
    KF_CHECK(s.ids.size() == expected, "{}: lists {} problems, but shard {}/{} of {} selected problems has {}",
             by_index[i]->path, s.ids.size(), i, count, s.selected, expected);
    for (const std::string& id : s.ids) {
      auto [it, fresh] = owner.emplace(id, i);
      KF_CHECK(fresh, "merge: problem '{}' belongs to both {} and {}: the shards overlap", id,
               label(*by_index[it->second], *info_of[it->second]), label(*by_index[i], s));
    }
    total += s.ids.size();
  }
  KF_CHECK(total == info[0].selected, "merge: the shards list {} problems, the run selected {}", total,
           info[0].selected);

  std::map<std::string, const TraceProblem*> found;
  for (int i = 0; i < count; ++i) {
    const Trace& t = *by_index[i];
    std::set<std::string> seen;
    for (const TraceProblem& p : t.problems) {
      KF_CHECK(seen.insert(p.id).second, "{}: problem '{}' appears twice", label(t, *info_of[i]), p.id);
      auto it = owner.find(p.id);
      KF_CHECK(it != owner.end() && it->second == i, "{}: problem '{}' is not one of this shard's{}",
               label(t, *info_of[i]), p.id,
               it == owner.end() ? "" : fmt::format(" (it is shard {}/{}'s: the shards overlap)", it->second, count));
      found[p.id] = &p;
    }
    std::vector<std::string> gap;
    for (const std::string& id : info_of[i]->ids)
      if (!found.count(id)) gap.push_back(id);
    KF_CHECK(gap.empty(),
             "{}: {} of its {} problems are missing ({}{}): the shard was cut short; finish it with kinfer eval "
             "--resume --shard {}/{} --out {} and the same flags",
             label(t, *info_of[i]), gap.size(), info_of[i]->ids.size(), fmt::join(gap.begin(), gap.begin() + std::min<size_t>(gap.size(), 5), ", "),
             gap.size() > 5 ? ", ..." : "", i, count, t.path);
  }

  Trace out;
  out.format = TraceFormat::Kinfer;
  out.header = by_index[0]->header;
  out.header.shard = json();
  json from = json::array();
  for (int i = 0; i < count; ++i)
    from.push_back({{"path", by_index[i]->path}, {"shard", fmt::format("{}/{}", i, count)},
                    {"git", by_index[i]->header.git}, {"created", by_index[i]->header.created}});
  out.header.extra["merged_from"] = from;
  if (gits.size() > 1) {
    out.header.git = fmt::format("{}", fmt::join(gits, ","));
    if (warnings)
      warnings->push_back(fmt::format("the shards were built from different git revisions ({})", fmt::join(gits, ", ")));
  }
  for (size_t pos = 0; pos < total; ++pos) {
    const ShardInfo& s = *info_of[pos % count];
    out.problems.push_back(*found.at(s.ids[pos / count]));
  }
  return out;
}

void require_whole(const Trace& trace, const char* what) {
  if (trace.header.shard.is_null()) return;
  const json& s = trace.header.shard;
  fail("{}: this trace is shard {}/{} of a run (kinfer eval --shard), not the whole run; {} needs every problem: merge "
       "the shards first (kinfer merge SHARD_TRACES... --out all.jsonl) and pass the merged file",
       trace.path, s.value("index", 0), s.value("count", 0), what);
}

}  // namespace kf::eval
