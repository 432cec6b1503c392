#include "kiln/codec/build_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln::codec {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> errorsOf(const json& body, std::vector<std::string> extra = {}) {
  std::vector<domain::FieldError> errors;
  EXPECT_FALSE(parseSpec(body, &errors, extra).has_value());
  std::vector<std::string> out;
  for (const auto& e : errors) out.push_back(e.field + ": " + e.message);
  return out;
}

TEST(ParseSpecTest, ReadsEverySeedField) {
  std::vector<domain::FieldError> errors;
  const auto spec = parseSpec(json::parse(R"({
    "prompt": "do it", "template": "feature", "variables": {"feature": "x"},
    "auto_commit": true, "auto_push": true, "callback_url": "https://cb.example/x",
    "branch": "dev", "commit_message": "msg", "timeout_s": 60})"),
                              &errors);
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->prompt, "do it");
  EXPECT_EQ(spec->template_name, "feature");
  EXPECT_EQ(spec->variables.at("feature"), "x");
  EXPECT_TRUE(spec->auto_commit);
  EXPECT_TRUE(spec->auto_push);
  EXPECT_EQ(spec->callback_url, "https://cb.example/x");
  EXPECT_EQ(spec->branch, "dev");
  EXPECT_EQ(spec->commit_message, "msg");
  EXPECT_EQ(spec->timeout_s, 60);
  EXPECT_EQ(specFromStored(toJson(*spec)), *spec);
}

TEST(ParseSpecTest, RejectsUnknownFieldsAndWrongTypes) {
  EXPECT_THAT(errorsOf(json::parse(R"({"prompt": "p", "promt": "x"})")),
              ElementsAre(HasSubstr("promt: unknown field \"promt\" (a BuildSpec has: prompt, ")));
  EXPECT_THAT(errorsOf(json::parse(R"({"prompt": 5})")),
              ElementsAre("prompt: prompt must be a string, got an integer"));
  EXPECT_THAT(errorsOf(json::parse(R"({"prompt": "p", "variables": {"n": 1, "b": true}})")),
              ElementsAre("variables.b: variables.b must be a string, got a boolean (quote numbers "
                          "and booleans)",
                          "variables.n: variables.n must be a string, got an integer (quote "
                          "numbers and booleans)"));
  EXPECT_THAT(errorsOf(json::parse(R"({"prompt": "p", "auto_push": "yes"})")),
              ElementsAre("auto_push: auto_push must be true or false, got a string"));
  EXPECT_THAT(errorsOf(json::parse(R"({"prompt": "p", "timeout_s": 1.5})")),
              ElementsAre(HasSubstr("timeout_s must be an integer number of seconds")));
  EXPECT_THAT(errorsOf(json::parse(R"({})")), ElementsAre("prompt: prompt is required"));
  EXPECT_THAT(errorsOf(json::parse(R"([1])")),
              ElementsAre(": the body must be a JSON object (a BuildSpec), got an array"));
}

TEST(ParseSpecTest, ExtraFieldsTheCallerHandlesAreSkipped) {
  std::vector<domain::FieldError> errors;
  EXPECT_TRUE(
      parseSpec(json::parse(R"({"prompt": "p", "project_id": "x"})"), &errors, {"project_id"})
          .has_value());
}

TEST(BuildJsonTest, ResultAndCompositionRoundTrip) {
  domain::BuildResult r;
  r.success = true;
  r.output = "out";
  r.commit_sha = "abc";
  r.files_changed = {{"a.txt", "added"}, {"b.txt", "deleted"}};
  r.duration_ms = 42;
  r.artifacts = {{"log.txt", "/var/a/log.txt", 10}};
  EXPECT_EQ(resultFromStored(toJson(r)), r);
  const std::vector<domain::CompositionEntry> c = {{"agent", "a", "code-agent/noop", "0.1.0"}};
  EXPECT_EQ(compositionFromStored(toJson(c)), c);
}

TEST(BuildJsonTest, ApiFormUsesSeedFieldNames) {
  domain::Build b;
  b.task_id = domain::newTaskId();
  b.project_id = "demo";
  b.branch = "main";
  b.spec.prompt = "p";
  b.created_at = 0;
  const json j = toJson(b);
  EXPECT_EQ(j["status"], "pending");
  EXPECT_EQ(j["created_at"], "1970-01-01T00:00:00.000Z");
  EXPECT_TRUE(j["result"].is_null());
  EXPECT_TRUE(j["error_kind"].is_null());
  EXPECT_TRUE(j["started_at"].is_null());
  b.error_kind = domain::ErrorKind::kInfrastructure;
  b.result = domain::BuildResult{};
  EXPECT_EQ(toJson(b)["error_kind"], "infrastructure");
  for (const char* field :
       {"success", "output", "error", "commit_sha", "files_changed", "duration_ms", "artifacts"}) {
    EXPECT_TRUE(toJson(b)["result"].contains(field)) << field;
  }
}

}  // namespace
}  // namespace kiln::codec
