#include "kiln/domain/build.h"

#include <algorithm>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln::domain {
namespace {

using ::testing::HasSubstr;

constexpr BuildStatus kStatuses[] = {BuildStatus::kPending, BuildStatus::kRunning,
                                     BuildStatus::kCompleted, BuildStatus::kFailed,
                                     BuildStatus::kCancelled};
constexpr TransitionReason kReasons[] = {
    TransitionReason::kClaimed, TransitionReason::kFinished, TransitionReason::kCancelled,
    TransitionReason::kLeaseExpired, TransitionReason::kReleased};

TEST(BuildStatusTest, NamesAreTheSeedsAndRoundTrip) {
  std::vector<std::string> names;
  for (BuildStatus s : kStatuses) {
    names.emplace_back(statusName(s));
    EXPECT_EQ(parseStatus(statusName(s)), s);
  }
  EXPECT_THAT(names,
              ::testing::ElementsAre("pending", "running", "completed", "failed", "cancelled"));
  EXPECT_FALSE(parseStatus("done").has_value());
  EXPECT_FALSE(parseStatus("Pending").has_value());
}

TEST(BuildStatusTest, OnlyCompletedFailedCancelledAreTerminal) {
  EXPECT_FALSE(isTerminal(BuildStatus::kPending));
  EXPECT_FALSE(isTerminal(BuildStatus::kRunning));
  EXPECT_TRUE(isTerminal(BuildStatus::kCompleted));
  EXPECT_TRUE(isTerminal(BuildStatus::kFailed));
  EXPECT_TRUE(isTerminal(BuildStatus::kCancelled));
}

// Every (from, to, reason) triple: exactly the transitions are allowed.
TEST(StateMachineTest, ExactlyTheAllowedTransitions) {
  using S = BuildStatus;
  using R = TransitionReason;
  const std::set<std::tuple<S, S, R>> allowed = {
      {S::kPending, S::kRunning, R::kClaimed},     {S::kPending, S::kCancelled, R::kCancelled},
      {S::kRunning, S::kCompleted, R::kFinished},  {S::kRunning, S::kFailed, R::kFinished},
      {S::kRunning, S::kCancelled, R::kCancelled}, {S::kRunning, S::kPending, R::kLeaseExpired},
      {S::kRunning, S::kFailed, R::kLeaseExpired}, {S::kRunning, S::kPending, R::kReleased},
  };
  int checked = 0;
  for (S from : kStatuses) {
    for (S to : kStatuses) {
      for (R reason : kReasons) {
        const bool expected = allowed.count({from, to, reason}) == 1;
        EXPECT_EQ(canTransition(from, to, reason), expected)
            << statusName(from) << " -> " << statusName(to) << " reason " << int(reason);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 125);
}

TEST(StateMachineTest, TerminalStatusesNeverChange) {
  for (BuildStatus from :
       {BuildStatus::kCompleted, BuildStatus::kFailed, BuildStatus::kCancelled}) {
    for (BuildStatus to : kStatuses) {
      for (TransitionReason r : kReasons) EXPECT_FALSE(canTransition(from, to, r));
    }
  }
}

TEST(ErrorKindTest, NamesRoundTrip) {
  for (ErrorKind k : {ErrorKind::kNone, ErrorKind::kWorkload, ErrorKind::kInfrastructure,
                      ErrorKind::kTimeout, ErrorKind::kInvalidInput, ErrorKind::kCancelled}) {
    EXPECT_EQ(parseErrorKind(errorKindName(k)), k);
  }
  EXPECT_EQ(errorKindName(ErrorKind::kInvalidInput), "invalid_input");
  EXPECT_FALSE(parseErrorKind("oops").has_value());
}

TEST(TaskIdTest, IsAUuidV7OrderedByTime) {
  const std::string a = newTaskId(1700000000000);
  const std::string b = newTaskId(1700000000001);
  EXPECT_TRUE(isValidTaskId(a)) << a;
  EXPECT_EQ(a.size(), 36u);
  EXPECT_EQ(a[14], '7');
  EXPECT_LT(a, b);
  EXPECT_EQ(a.substr(0, 8), "018bcfe5");  // 1700000000000 ms = 0x018BCFE56800
  // Many ids in one millisecond stay unique and in creation order.
  std::vector<std::string> many;
  for (int i = 0; i < 5000; ++i) many.push_back(newTaskId(1700000000002));
  EXPECT_TRUE(std::is_sorted(many.begin(), many.end()));
  EXPECT_EQ(std::set<std::string>(many.begin(), many.end()).size(), many.size());
  for (const auto& id : many) ASSERT_TRUE(isValidTaskId(id)) << id;
  // A clock that steps back does not break the order.
  EXPECT_GT(newTaskId(1600000000000), many.back());
  EXPECT_FALSE(isValidTaskId("not-a-uuid"));
  EXPECT_FALSE(isValidTaskId("018bcfe5-6800-4000-8000-000000000000"));  // v4
}

TEST(TimeTest, FormatsRfc3339Utc) {
  EXPECT_EQ(formatTime(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(formatTime(1700000000123), "2023-11-14T22:13:20.123Z");
}

std::vector<std::string> fieldsOf(const BuildSpec& spec, SpecLimits limits = {}) {
  std::vector<std::string> out;
  for (const auto& e : validateSpec(spec, limits)) out.push_back(e.field + ": " + e.message);
  return out;
}

TEST(ValidateSpecTest, AValidSpecHasNoErrors) {
  BuildSpec spec;
  spec.prompt = "add a README";
  spec.template_name = "feature";
  spec.variables = {{"feature", "x"}};
  spec.callback_url = "https://bot.example/hooks/kiln?x=1";
  spec.branch = "feature/readme";
  spec.timeout_s = 600;
  EXPECT_THAT(fieldsOf(spec), ::testing::IsEmpty());
}

TEST(ValidateSpecTest, SaysWhatToFix) {
  BuildSpec spec;
  EXPECT_THAT(fieldsOf(spec), ::testing::ElementsAre("prompt: prompt is required"));
  spec.prompt = "  \n";
  EXPECT_THAT(fieldsOf(spec), ::testing::ElementsAre("prompt: prompt must not be blank"));
  spec.prompt = std::string(11, 'x');
  EXPECT_THAT(fieldsOf(spec, {10, 3600}),
              ::testing::ElementsAre("prompt: prompt is 11 bytes; the limit is 10"));
  spec.prompt = "ok\xff";
  EXPECT_THAT(fieldsOf(spec), ::testing::ElementsAre("prompt: prompt must be valid UTF-8"));

  BuildSpec bad;
  bad.prompt = "p";
  bad.template_name = "../etc/passwd";
  bad.variables = {{"9lives", "x"}};
  bad.callback_url = "ftp://x";
  bad.branch = "a..b";
  bad.timeout_s = 7200;
  const auto errors = fieldsOf(bad);
  ASSERT_EQ(errors.size(), 5u);
  EXPECT_THAT(errors[0], HasSubstr("template: template must be 1-64 letters"));
  EXPECT_THAT(errors[1], HasSubstr("variables.9lives: variable names must match"));
  EXPECT_THAT(errors[2],
              HasSubstr("callback_url: callback_url must be an absolute http:// or https:// URL"));
  EXPECT_THAT(errors[3], HasSubstr("branch: branch must be a valid git branch name"));
  EXPECT_THAT(errors[4], HasSubstr("timeout_s: timeout_s must be between 1 and 3600"));
}

TEST(ValidateSpecTest, CallbackUrlMustBeAbsoluteHttp) {
  BuildSpec spec;
  spec.prompt = "p";
  for (const char* ok : {"http://127.0.0.1:8080/cb", "https://a.b/c", "HTTPS://A.B"}) {
    spec.callback_url = ok;
    EXPECT_THAT(fieldsOf(spec), ::testing::IsEmpty()) << ok;
  }
  for (const char* bad :
       {"/relative", "http://", "https://user@host/x", "javascript:alert(1)", "http://a b/"}) {
    spec.callback_url = bad;
    EXPECT_EQ(fieldsOf(spec).size(), 1u) << bad;
  }
}

TEST(ProjectIdTest, SameRuleAsTheConfiguration) {
  EXPECT_TRUE(isValidProjectId("demo"));
  EXPECT_TRUE(isValidProjectId("a.b-c_d9"));
  EXPECT_FALSE(isValidProjectId("Demo"));
  EXPECT_FALSE(isValidProjectId("-x"));
  EXPECT_FALSE(isValidProjectId(""));
  EXPECT_FALSE(isValidProjectId(std::string(64, 'a')));
}

}  // namespace
}  // namespace kiln::domain
