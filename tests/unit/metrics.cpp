// pass@k and majority vote against values computed with exact binomials
// (Python's math.comb and fractions) and small hand-made votes.
#include <gtest/gtest.h>

#include "eval/metrics.h"
#include "util/error.h"

namespace kf::eval {
namespace {

TEST(PassAtK, SmallCases) {
  EXPECT_NEAR(pass_at_k(10, 3, 2), 24.0 / 45.0, 1e-15);  // 1 - C(7,2)/C(10,2)
  EXPECT_EQ(pass_at_k(5, 0, 3), 0.0);
  EXPECT_EQ(pass_at_k(5, 5, 1), 1.0);
  EXPECT_EQ(pass_at_k(5, 3, 3), 1.0);  // n - c < k: every 3-subset holds a correct one
  EXPECT_NEAR(pass_at_k(100, 1, 1), 0.01, 1e-15);
  EXPECT_NEAR(pass_at_k(8, 2, 8), 1.0, 0);
  for (int c = 0; c <= 16; ++c) EXPECT_NEAR(pass_at_k(16, c, 1), c / 16.0, 1e-15);  // pass@1 = mean
}

TEST(PassAtK, LargeValuesStayStable) {
  // C(990,500) and C(1000,500) overflow doubles; the product form does not.
  EXPECT_NEAR(pass_at_k(1000, 10, 500), 0.9990668121978155, 1e-13);
  EXPECT_NEAR(pass_at_k(4000, 3, 64), 0.04724771988394798, 1e-13);
}

TEST(PassAtK, RejectsBadInput) {
  EXPECT_THROW(pass_at_k(4, 5, 1), Error);
  EXPECT_THROW(pass_at_k(4, 2, 5), Error);
  EXPECT_THROW(pass_at_k(4, 2, 0), Error);
  EXPECT_THROW(pass_at_k(0, 0, 1), Error);
}

TEST(MajorityVote, PicksTheMostCommonAnswer) {
  const std::vector<std::string> preds = {"3", "5", " 5", "", "", "", "3", "5"};
  const std::vector<bool> correct = {false, true, true, false, false, false, false, true};
  const Vote v = majority_vote(preds, correct);
  EXPECT_EQ(v.prediction, "5");  // empties abstain, " 5" counts as "5"
  EXPECT_EQ(v.votes, 3);
  EXPECT_TRUE(v.correct);
}

TEST(MajorityVote, TiesGoToTheFirstAnswerSeen) {
  const std::vector<std::string> preds = {"7", "8", "8", "7"};
  const std::vector<bool> correct = {false, true, true, false};
  EXPECT_EQ(majority_vote(preds, correct).prediction, "7");
  EXPECT_FALSE(majority_vote(preds, correct).correct);
}

TEST(MajorityVote, CustomEquivalence) {
  const std::vector<std::string> preds = {"1/2", "0.5", "2"};
  const std::vector<bool> correct = {true, true, false};
  const SameAnswer same = [](std::string_view a, std::string_view b) {
    auto val = [](std::string_view s) { return s == "1/2" ? 0.5 : std::stod(std::string(s)); };
    return val(a) == val(b);
  };
  EXPECT_EQ(majority_vote(preds, correct, same).votes, 2);
  EXPECT_EQ(majority_vote(preds, correct).votes, 1);  // plain strings: three different answers
}

TEST(MajorityVote, NobodyAnswered) {
  const Vote v = majority_vote({"", ""}, {false, false});
  EXPECT_EQ(v.votes, 0);
  EXPECT_FALSE(v.correct);
}

TEST(MajorityAtK, DisjointGroups) {
  // Groups of 2: {a,a} right, {b,a} -> b (tie, first) wrong, {a,b} -> a right; leftover ignored.
  const std::vector<std::string> preds = {"a", "a", "b", "a", "a", "b", "b"};
  const std::vector<bool> correct = {true, true, false, true, true, false, false};
  EXPECT_NEAR(majority_at_k(preds, correct, 2), 2.0 / 3.0, 1e-15);
  EXPECT_NEAR(majority_at_k(preds, correct, 1), 4.0 / 7.0, 1e-15);  // maj@1 = accuracy
  EXPECT_EQ(majority_at_k(preds, correct, 7), 1.0);                  // a: 4 votes
  EXPECT_THROW(majority_at_k(preds, correct, 8), Error);
}

TEST(Metrics, PowersOfTwo) {
  EXPECT_EQ(powers_of_two_up_to(8), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(powers_of_two_up_to(6), (std::vector<int64_t>{1, 2, 4, 6}));
  EXPECT_EQ(powers_of_two_up_to(1), (std::vector<int64_t>{1}));
}

}  // namespace
}  // namespace kf::eval
