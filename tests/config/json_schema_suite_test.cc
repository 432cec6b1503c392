// Runs the official JSON-Schema-Test-Suite (draft-07) against JsonSchema, one
// named test per suite case, so a regression names the exact case.
#include <cctype>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln/config/json_schema.h"

#ifndef KILN_JSON_SCHEMA_SUITE_DIR
#error "KILN_JSON_SCHEMA_SUITE_DIR must name the suite's tests/draft7 directory"
#endif

namespace kiln::config {
namespace {

using nlohmann::json;

#define KILN_STRINGIFY_IMPL(x) #x
#define KILN_STRINGIFY(x) KILN_STRINGIFY_IMPL(x)

// Rationale: CMake passes the definition as a string literal, a hand-typed
// -DKILN_JSON_SCHEMA_SUITE_DIR=/path as bare tokens; stringifying accepts both,
// and the quotes of the literal form are stripped here.
std::string suiteDir() {
  std::string dir = KILN_STRINGIFY(KILN_JSON_SCHEMA_SUITE_DIR);
  if (dir.size() >= 2 && dir.front() == '"' && dir.back() == '"') {
    dir = dir.substr(1, dir.size() - 2);
  }
  return dir;
}

// Every case of each of these files runs. The first group is the keywords
// json_schema.h promises; the rest are the extras it implements.
// clang-format off
const std::vector<std::string> kSuiteFiles = {
    "type", "properties", "required", "additionalProperties", "enum", "const", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
    "items", "minItems", "maxItems", "default", "ref", "definitions",
    // Extras.
    "allOf", "anyOf", "oneOf", "not", "patternProperties", "additionalItems", "multipleOf",
    "minProperties", "maxProperties", "propertyNames", "contains", "uniqueItems",
    "if-then-else", "dependencies", "boolean_schema",
};
// clang-format on

// (file, group description) -> why the group cannot pass here.
const std::map<std::pair<std::string, std::string>, std::string> kSkipped = {
    {{"ref", "Recursive references between schemas"},
     "relies on $id-based base URI changes (\"$ref\": \"node\" resolved against "
     "\"$id\": \"http://localhost:1234/tree\"), which JsonSchema does not support"},
};

struct SuiteCase {
  std::string file;  // without ".json"
  size_t group_index = 0;
  std::string group;
  size_t case_index = 0;
  std::string description;
  json schema;
  json data;
  bool valid = false;
};

std::ostream& operator<<(std::ostream& os, const SuiteCase& c) {
  return os << c.file << ".json / " << c.group << " / " << c.description;
}

struct Suite {
  std::vector<SuiteCase> cases;
  std::map<std::string, std::string> load_errors;  // file -> what went wrong
};

const Suite& suite() {
  static const Suite loaded = [] {
    Suite s;
    for (const std::string& file : kSuiteFiles) {
      const std::string path = suiteDir() + "/" + file + ".json";
      std::ifstream in(path);
      if (!in) {
        s.load_errors[file] = "cannot open " + path;
        continue;
      }
      json groups = json::parse(in, nullptr, /*allow_exceptions=*/false);
      if (!groups.is_array()) {
        s.load_errors[file] = "not a JSON array: " + path;
        continue;
      }
      for (size_t g = 0; g < groups.size(); ++g) {
        const json& group = groups[g];
        const json& tests = group.at("tests");
        for (size_t t = 0; t < tests.size(); ++t) {
          s.cases.push_back({file, g, group.at("description").get<std::string>(), t,
                             tests[t].at("description").get<std::string>(), group.at("schema"),
                             tests[t].at("data"), tests[t].at("valid").get<bool>()});
        }
      }
    }
    return s;
  }();
  return loaded;
}

const std::string* skipReason(const SuiteCase& c) {
  auto it = kSkipped.find({c.file, c.group});
  return it == kSkipped.end() ? nullptr : &it->second;
}

std::string testName(const testing::TestParamInfo<SuiteCase>& info) {
  const SuiteCase& c = info.param;
  std::string raw = c.file + "_" + std::to_string(c.group_index) + "_" + c.group + "_" +
                    std::to_string(c.case_index) + "_" + c.description;
  std::string name;
  for (char ch : raw) {
    const bool word = std::isalnum(static_cast<unsigned char>(ch));
    if (word) {
      name += ch;
    } else if (!name.empty() && name.back() != '_') {
      name += '_';
    }
  }
  while (!name.empty() && name.back() == '_') name.pop_back();
  return name;
}

class JsonSchemaSuiteTest : public testing::TestWithParam<SuiteCase> {};

TEST_P(JsonSchemaSuiteTest, Case) {
  const SuiteCase& c = GetParam();
  if (const std::string* reason = skipReason(c)) GTEST_SKIP() << *reason;

  std::string error;
  const std::optional<JsonSchema> schema = JsonSchema::compile(c.schema, &error);
  ASSERT_TRUE(schema.has_value()) << "compile failed: " << error << "\nschema: " << c.schema;

  const std::vector<SchemaViolation> violations = schema->validate(c.data);
  std::string listed;
  for (const SchemaViolation& v : violations) listed += "\n  " + v.instance_path + ": " + v.message;
  EXPECT_EQ(violations.empty(), c.valid)
      << "schema: " << c.schema << "\ndata: " << c.data << "\nviolations:" << listed;

  // Every violation must say something and point at a place in the data.
  for (const SchemaViolation& v : violations) {
    EXPECT_FALSE(v.message.empty());
    EXPECT_TRUE(c.data.contains(json::json_pointer(v.instance_path)))
        << v.instance_path << " is not in " << c.data;
  }
}

INSTANTIATE_TEST_SUITE_P(Draft7, JsonSchemaSuiteTest, testing::ValuesIn(suite().cases), testName);

// Without this, a missing suite directory would pass with zero cases.
TEST(JsonSchemaSuiteCoverage, EveryFileLoadsAndRunsCases) {
  for (const auto& [file, error] : suite().load_errors) ADD_FAILURE() << file << ": " << error;
  std::map<std::string, size_t> run;
  for (const SuiteCase& c : suite().cases) {
    if (!skipReason(c)) ++run[c.file];
  }
  size_t total = 0;
  for (const std::string& file : kSuiteFiles) {
    EXPECT_GT(run[file], 0u) << file << ".json ran no cases";
    total += run[file];
  }
  // Debian's suite 2.0.0 has 406 non-skipped cases in these files.
  EXPECT_GE(total, 400u);
}

// A skip-list entry that matches nothing would hide a renamed group.
TEST(JsonSchemaSuiteCoverage, EverySkipMatchesAGroup) {
  for (const auto& [key, reason] : kSkipped) {
    bool found = false;
    for (const SuiteCase& c : suite().cases)
      found = found || (c.file == key.first && c.group == key.second);
    EXPECT_TRUE(found) << key.first << ".json / " << key.second;
  }
}

}  // namespace
}  // namespace kiln::config
