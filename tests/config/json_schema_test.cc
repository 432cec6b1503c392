#include "kiln/config/json_schema.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace kiln::config {
namespace {

using nlohmann::json;

// (instance_path, message) pairs, which EXPECT_EQ compares and prints.
using Violations = std::vector<std::pair<std::string, std::string>>;

Violations check(const JsonSchema& schema, const json& instance) {
  Violations out;
  for (const SchemaViolation& v : schema.validate(instance)) {
    out.emplace_back(v.instance_path, v.message);
  }
  return out;
}

// The compiled schema; a failure fails the test and yields an empty schema.
JsonSchema mustCompile(const json& schema) {
  std::string error;
  std::optional<JsonSchema> compiled = JsonSchema::compile(schema, &error);
  if (!compiled) ADD_FAILURE() << "compile failed: " << error;
  return compiled.value_or(JsonSchema());
}

// The compile error for `schema`, or "" (and a test failure) if it compiled.
std::string compileError(const json& schema) {
  std::string error;
  if (JsonSchema::compile(schema, &error)) {
    ADD_FAILURE() << "compiled, but should not have: " << schema;
    return "";
  }
  EXPECT_FALSE(error.empty());
  return error;
}

// What a webhook-notifier plugin might declare.
const json kWebhookSchema = json::parse(R"({
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "properties": {
    "url": {"type": "string", "pattern": "^https?://"},
    "timeout_s": {"type": "integer", "minimum": 1, "maximum": 300, "default": 30},
    "retries": {"type": "integer", "minimum": 0, "default": 3},
    "mode": {"enum": ["a", "b"], "default": "a"},
    "headers": {
      "type": "array",
      "maxItems": 8,
      "items": {"$ref": "#/definitions/header"}
    }
  },
  "required": ["url"],
  "additionalProperties": false,
  "definitions": {
    "header": {
      "type": "object",
      "properties": {
        "name": {"type": "string", "minLength": 1},
        "value": {"type": "string"}
      },
      "required": ["name", "value"],
      "additionalProperties": false
    }
  }
})");

TEST(JsonSchemaTest, ValidPluginConfigHasNoViolations) {
  const JsonSchema schema = mustCompile(kWebhookSchema);
  EXPECT_EQ(check(schema, json::parse(R"({
    "url": "https://hooks.example.com/x", "timeout_s": 10, "mode": "b",
    "headers": [{"name": "X-Token", "value": "s3cret"}]
  })")),
            Violations{});
  EXPECT_TRUE(schema.ignoredKeywords().empty());
}

TEST(JsonSchemaTest, MessagesSayWhatToFix) {
  const JsonSchema schema = mustCompile(kWebhookSchema);
  EXPECT_EQ(check(schema, json::parse(R"({"url": "https://x", "timeout_s": 0})")),
            (Violations{{"/timeout_s", "must be >= 1, got 0"}}));
  EXPECT_EQ(check(schema, json::parse(R"({"timeout_s": 5})")),
            (Violations{{"", "missing required property \"url\""}}));
  EXPECT_EQ(check(schema, json::parse(R"({"url": "https://x", "mode": "c"})")),
            (Violations{{"/mode", "must be one of \"a\", \"b\""}}));
  // The pattern does not apply to a non-string, so only the type is reported.
  EXPECT_EQ(check(schema, json::parse(R"({"url": 5})")),
            (Violations{{"/url", "must be a string, got integer"}}));
  EXPECT_EQ(check(schema, json::parse(R"({"url": "ftp://x"})")),
            (Violations{{"/url", "must match the pattern \"^https?://\""}}));
  EXPECT_EQ(check(schema, json::parse(R"({"url": "https://x", "timeout_s": 2.5})")),
            (Violations{{"/timeout_s", "must be an integer, got number"}}));
  EXPECT_EQ(check(schema, json::parse(R"({"url": "https://x", "timeout_s": 301})")),
            (Violations{{"/timeout_s", "must be <= 300, got 301"}}));
  EXPECT_EQ(check(schema, json::parse(R"([1])")),
            (Violations{{"", "must be an object, got array"}}));
}

TEST(JsonSchemaTest, UnknownPropertyListsAllowedNamesAndSuggestsOne) {
  const JsonSchema schema = mustCompile(kWebhookSchema);
  EXPECT_EQ(check(schema, json::parse(R"({"url": "https://x", "tiemout_s": 5})")),
            (Violations{{"/tiemout_s",
                         "unknown property \"tiemout_s\" (allowed: headers, mode, retries, "
                         "timeout_s, url), did you mean \"timeout_s\"?"}}));
  EXPECT_EQ(check(schema, json::parse(R"({"url": "https://x", "colour": 5})")),
            (Violations{{"/colour",
                         "unknown property \"colour\" (allowed: headers, mode, retries, "
                         "timeout_s, url)"}}));

  const JsonSchema closed = mustCompile(json::parse(R"({"additionalProperties": false})"));
  EXPECT_EQ(check(closed, json::parse(R"({"x": 1})")),
            (Violations{{"/x", "unknown property \"x\" (no properties are allowed here)"}}));
}

TEST(JsonSchemaTest, PathsPointIntoArraysAndNestedObjects) {
  const JsonSchema schema = mustCompile(kWebhookSchema);
  EXPECT_EQ(check(schema, json::parse(R"({
    "url": "https://x",
    "headers": [{"name": "A"}, {"name": "", "value": "v"}, {"name": "B", "value": 7}]
  })")),
            (Violations{{"/headers/0", "missing required property \"value\""},
                        {"/headers/1/name", "must be at least 1 character long, got 0"},
                        {"/headers/2/value", "must be a string, got integer"}}));
}

TEST(JsonSchemaTest, ReportsEveryViolationInDocumentOrder) {
  const JsonSchema schema = mustCompile(kWebhookSchema);
  // Keywords run in schema order; the result is still ordered by where in the
  // document each problem is, parents before children.
  EXPECT_EQ(check(schema, json::parse(R"({
    "retries": -1,
    "headers": [{"name": "A", "value": "1", "extra": true}, {"name": 3, "value": "2"}],
    "mode": "z",
    "timeout_s": "30"
  })")),
            (Violations{
                {"", "missing required property \"url\""},
                {"/headers/0/extra", "unknown property \"extra\" (allowed: name, value)"},
                {"/headers/1/name", "must be a string, got integer"},
                {"/mode", "must be one of \"a\", \"b\""},
                {"/retries", "must be >= 0, got -1"},
                {"/timeout_s", "must be an integer, got string"},
            }));

  // allOf checks "b" before "a" and adds "required" last; the result does not.
  const JsonSchema combined = mustCompile(json::parse(R"({
    "allOf": [
      {"properties": {"b": {"type": "string"}}},
      {"properties": {"a": {"items": {"type": "string"}}}},
      {"required": ["c"]}
    ]
  })"));
  EXPECT_EQ(check(combined, json::parse(R"({"a": [1, "x", 2], "b": 1})")),
            (Violations{{"", "missing required property \"c\""},
                        {"/a/0", "must be a string, got integer"},
                        {"/a/2", "must be a string, got integer"},
                        {"/b", "must be a string, got integer"}}));
}

TEST(JsonSchemaTest, PathsEscapeSlashAndTilde) {
  const JsonSchema schema = mustCompile(
      json::parse(R"({"properties": {"a/b": {"properties": {"c~d": {"type": "null"}}}}})"));
  EXPECT_EQ(check(schema, json::parse(R"({"a/b": {"c~d": 1}})")),
            (Violations{{"/a~1b/c~0d", "must be null, got integer"}}));
}

TEST(JsonSchemaTest, TypeListsAndIntegersWithZeroFraction) {
  const JsonSchema integer = mustCompile(json::parse(R"({"type": "integer"})"));
  EXPECT_TRUE(check(integer, json(1.0)).empty());
  EXPECT_TRUE(check(integer, json(18446744073709551615u)).empty());
  EXPECT_EQ(check(integer, json(1.5)), (Violations{{"", "must be an integer, got number"}}));

  const JsonSchema nullable = mustCompile(json::parse(R"({"type": ["string", "null"]})"));
  EXPECT_TRUE(check(nullable, json(nullptr)).empty());
  EXPECT_EQ(check(nullable, json(true)),
            (Violations{{"", "must be a string or null, got boolean"}}));

  const JsonSchema three = mustCompile(json::parse(R"({"type": ["array", "string", "integer"]})"));
  EXPECT_EQ(check(three, json::object()),
            (Violations{{"", "must be a string, an integer or an array, got object"}}));
}

TEST(JsonSchemaTest, NumbersCompareAcrossRepresentations) {
  const JsonSchema bounds =
      mustCompile(json::parse(R"({"minimum": 1.5, "exclusiveMaximum": 18446744073709551615})"));
  EXPECT_TRUE(check(bounds, json(2)).empty());
  EXPECT_TRUE(check(bounds, json(18446744073709551614u)).empty());
  EXPECT_EQ(check(bounds, json(1)), (Violations{{"", "must be >= 1.5, got 1"}}));
  EXPECT_EQ(check(bounds, json(18446744073709551615u)),
            (Violations{{"", "must be < 18446744073709551615, got 18446744073709551615"}}));

  // nlohmann's own == says -1 equals the largest uint64; JSON Schema does not.
  const JsonSchema big = mustCompile(json::parse(R"({"const": 18446744073709551615})"));
  EXPECT_FALSE(check(big, json(-1)).empty());

  const JsonSchema one = mustCompile(json::parse(R"({"enum": [1, {"a": [2]}]})"));
  EXPECT_TRUE(check(one, json(1.0)).empty());
  EXPECT_TRUE(check(one, json::parse(R"({"a": [2.0]})")).empty());
  EXPECT_FALSE(check(one, json(true)).empty());
  EXPECT_FALSE(check(one, json::parse(R"({"a": [2, 3]})")).empty());

  const JsonSchema cents = mustCompile(json::parse(R"({"multipleOf": 0.01})"));
  EXPECT_TRUE(check(cents, json(19.99)).empty());
  EXPECT_EQ(check(cents, json(0.005)), (Violations{{"", "must be a multiple of 0.01, got 0.005"}}));
}

TEST(JsonSchemaTest, LengthsCountCodePoints) {
  const JsonSchema schema = mustCompile(json::parse(R"({"minLength": 3, "maxLength": 5})"));
  EXPECT_TRUE(check(schema, json("héllo")).empty());  // 6 bytes, 5 code points
  EXPECT_EQ(check(schema, json("💩💩")),
            (Violations{{"", "must be at least 3 characters long, got 2"}}));
  EXPECT_EQ(check(schema, json("abcdef")),
            (Violations{{"", "must be at most 5 characters long, got 6"}}));
  EXPECT_TRUE(check(schema, json(12)).empty());  // not a string: does not apply
}

TEST(JsonSchemaTest, PatternsAreUnanchoredEcmaScriptOverCodePoints) {
  const JsonSchema word = mustCompile(json::parse(R"({"pattern": "\\d{2}"})"));
  EXPECT_TRUE(check(word, json("build-42-x")).empty());
  EXPECT_FALSE(check(word, json("build-4")).empty());

  const JsonSchema one_char = mustCompile(json::parse(R"({"pattern": "^.$"})"));
  EXPECT_TRUE(check(one_char, json("é")).empty());
  EXPECT_TRUE(check(one_char, json("💩")).empty());
  EXPECT_FALSE(check(one_char, json("ab")).empty());
}

TEST(JsonSchemaTest, RecursiveRefsValidateNestedValues) {
  const JsonSchema schema = mustCompile(json::parse(R"({
    "$ref": "#/definitions/step",
    "definitions": {
      "step": {
        "type": "object",
        "properties": {
          "name": {"type": "string"},
          "then": {"type": "array", "items": {"$ref": "#/definitions/step"}}
        },
        "required": ["name"]
      }
    }
  })"));
  EXPECT_TRUE(check(schema, json::parse(R"({"name": "a", "then": [{"name": "b"}]})")).empty());
  EXPECT_EQ(
      check(schema,
            json::parse(
                R"({"name": "a", "then": [{"name": "b", "then": [{"name": "c"}, {"name": 1}]}]})")),
      (Violations{{"/then/0/then/1/name", "must be a string, got integer"}}));
}

TEST(JsonSchemaTest, RefToRootAndEscapedPointers) {
  const JsonSchema schema = mustCompile(json::parse(R"({
    "type": "object",
    "properties": {
      "child": {"$ref": "#"},
      "a": {"$ref": "#/definitions/x~1y"},
      "b": {"$ref": "#/definitions/p%25q"},
      "c": {"$ref": "#/definitions/t~0"}
    },
    "definitions": {"x/y": {"type": "integer"}, "p%q": {"type": "string"}, "t~": {"const": 1}}
  })"));
  EXPECT_EQ(check(schema, json::parse(R"({"child": {"child": {"a": "1", "b": 2, "c": 2}}})")),
            (Violations{{"/child/child/a", "must be an integer, got string"},
                        {"/child/child/b", "must be a string, got integer"},
                        {"/child/child/c", "must be equal to 1"}}));
}

TEST(JsonSchemaTest, RefSiblingsAreIgnoredAndReported) {
  const JsonSchema schema = mustCompile(json::parse(R"({
    "definitions": {"n": {"type": "integer"}},
    "properties": {"x": {"$ref": "#/definitions/n", "maximum": 2, "description": "fine"}}
  })"));
  EXPECT_TRUE(check(schema, json::parse(R"({"x": 5})")).empty());
  EXPECT_EQ(schema.ignoredKeywords(), std::vector<std::string>{"maximum (beside $ref)"});
}

TEST(JsonSchemaTest, RefToTheDraft07MetaSchema) {
  // A plugin option that is itself a schema.
  const JsonSchema schema = mustCompile(json::parse(
      R"({"properties": {"shape": {"$ref": "http://json-schema.org/draft-07/schema#"}}})"));
  EXPECT_TRUE(check(schema, json::parse(R"({"shape": {"type": "string"}})")).empty());
  EXPECT_EQ(check(schema, json::parse(R"({"shape": {"minLength": -1}})")),
            (Violations{{"/shape/minLength", "must be >= 0, got -1"}}));
}

TEST(JsonSchemaTest, CombinatorMessagesExplainEachAlternative) {
  const JsonSchema any = mustCompile(
      json::parse(R"({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}]})"));
  EXPECT_EQ(check(any, json(0)),
            (Violations{{"",
                         "must match at least one of the \"anyOf\" schemas: anyOf/0: must be "
                         "a string, got integer; anyOf/1: must be >= 1, got 0"}}));

  const JsonSchema one =
      mustCompile(json::parse(R"({"oneOf": [{"type": "number"}, {"type": "integer"}]})"));
  EXPECT_EQ(check(one, json(3)),
            (Violations{{"",
                         "must match exactly one of the \"oneOf\" schemas, but matches "
                         "oneOf/0 and oneOf/1"}}));

  const JsonSchema cond = mustCompile(json::parse(R"({
    "if": {"properties": {"kind": {"const": "git"}}},
    "then": {"required": ["repo"]},
    "else": {"required": ["path"]}
  })"));
  EXPECT_EQ(check(cond, json::parse(R"({"kind": "git"})")),
            (Violations{{"", "missing required property \"repo\""}}));
  EXPECT_EQ(check(cond, json::parse(R"({"kind": "dir"})")),
            (Violations{{"", "missing required property \"path\""}}));
}

TEST(JsonSchemaTest, ArrayKeywordsPointAtTheOffendingItem) {
  const JsonSchema schema = mustCompile(json::parse(
      R"({"uniqueItems": true, "items": [{"type": "string"}], "additionalItems": {"type": "integer"}})"));
  EXPECT_EQ(check(schema, json::parse(R"(["a", 1, "x", 1])")),
            (Violations{{"/2", "must be an integer, got string"},
                        {"/3", "duplicate of item 1 (items must be unique)"}}));
}

TEST(JsonSchemaTest, WithDefaultsFillsAbsentPropertiesOnly) {
  const JsonSchema schema = mustCompile(kWebhookSchema);
  const json input = json::parse(R"({"url": "https://x", "retries": 0})");
  EXPECT_EQ(schema.withDefaults(input), json::parse(R"({
    "url": "https://x", "retries": 0, "timeout_s": 30, "mode": "a"
  })"));
  EXPECT_EQ(input, json::parse(R"({"url": "https://x", "retries": 0})"));  // not modified
  EXPECT_EQ(schema.withDefaults(json("not an object")), json("not an object"));
}

TEST(JsonSchemaTest, WithDefaultsRecursesIntoPresentAndDefaultedObjects) {
  const JsonSchema schema = mustCompile(json::parse(R"({
    "properties": {
      "limits": {
        "type": "object",
        "default": {"cpu": 2},
        "properties": {
          "cpu": {"type": "integer", "default": 1},
          "memory_mb": {"type": "integer", "default": 512}
        }
      },
      "git": {"$ref": "#/definitions/git"},
      "extra": {
        "allOf": [{"properties": {"depth": {"default": 1}}}],
        "properties": {"shallow": {"default": true}}
      }
    },
    "definitions": {
      "git": {
        "type": "object",
        "properties": {"branch": {"default": "main"}, "remote": {"default": "origin"}}
      }
    }
  })"));
  // Absent: the default {"cpu": 2} keeps its cpu and gains memory_mb.
  EXPECT_EQ(schema.withDefaults(json::object()),
            json::parse(R"({"limits": {"cpu": 2, "memory_mb": 512}})"));
  // Present: nested defaults fill in around what the user set, through $ref
  // and allOf.
  EXPECT_EQ(schema.withDefaults(json::parse(R"({
    "limits": {"memory_mb": 1024}, "git": {"branch": "dev"}, "extra": {}
  })")),
            json::parse(R"({
    "limits": {"cpu": 1, "memory_mb": 1024},
    "git": {"branch": "dev", "remote": "origin"},
    "extra": {"shallow": true, "depth": 1}
  })"));
}

TEST(JsonSchemaTest, WithDefaultsStopsOnEndlesslyNestingDefaults) {
  const JsonSchema schema = mustCompile(json::parse(R"({
    "properties": {"next": {"default": {}, "properties": {"next": {"$ref": "#/properties/next"}}}}
  })"));
  json filled = schema.withDefaults(json::object());
  int depth = 0;
  for (const json* v = &filled; v->contains("next"); v = &(*v)["next"]) ++depth;
  EXPECT_GT(depth, 1);
  EXPECT_LE(depth, 64);
}

TEST(JsonSchemaTest, IgnoredKeywordsAreReportedOnce) {
  const JsonSchema schema = mustCompile(json::parse(R"({
    "$id": "https://kiln.example/plugins/webhook.json",
    "title": "Webhook", "description": "d", "$comment": "c", "examples": [{}],
    "properties": {
      "url": {"type": "string", "format": "uri", "x-secret": true},
      "callback": {"type": "string", "format": "uri"},
      "nested": {"$id": "https://kiln.example/other.json"}
    }
  })"));
  EXPECT_EQ(schema.ignoredKeywords(), (std::vector<std::string>{"format", "$id", "x-secret"}));
}

TEST(JsonSchemaTest, CompileRejectsMalformedKeywords) {
  EXPECT_EQ(compileError(json::parse(R"({"properties": {"retries": {"minimum": "x"}}})")),
            "invalid schema at #/properties/retries: \"minimum\" must be a number, got string");
  EXPECT_EQ(compileError(json::parse(R"({"type": "strin"})")),
            "invalid schema at #: \"type\" must be one of string, integer, number, boolean, "
            "object, array, null (or an array of them), got \"strin\"");
  EXPECT_EQ(compileError(json::parse(R"({"required": "url"})")),
            "invalid schema at #: \"required\" must be an array of strings, got string");
  EXPECT_EQ(compileError(json::parse(R"({"minLength": -1})")),
            "invalid schema at #: \"minLength\" must be a non-negative integer, got -1");
  EXPECT_EQ(compileError(json::parse(R"({"maxItems": 1.5})")),
            "invalid schema at #: \"maxItems\" must be a non-negative integer, got 1.5");
  EXPECT_EQ(compileError(json::parse(R"({"multipleOf": 0})")),
            "invalid schema at #: \"multipleOf\" must be greater than 0, got 0");
  EXPECT_EQ(compileError(json::parse(R"({"enum": []})")),
            "invalid schema at #: \"enum\" must be a non-empty array, got an empty array");
  EXPECT_EQ(compileError(json::parse(R"({"items": [1]})")),
            "invalid schema at #/items/0: a schema must be an object or a boolean, got integer");
  EXPECT_EQ(compileError(json(5)),
            "invalid schema at #: a schema must be an object or a boolean, got integer");
  EXPECT_EQ(compileError(json::parse(R"({"definitions": {"unused": {"maxLength": "3"}}})")),
            "invalid schema at #/definitions/unused: \"maxLength\" must be a non-negative "
            "integer, got string");
  // Compiling with no error sink must not crash.
  EXPECT_FALSE(JsonSchema::compile(json(5), nullptr).has_value());
}

TEST(JsonSchemaTest, CompileRejectsInvalidPatterns) {
  const std::string error = compileError(json::parse(R"({"pattern": "(["})"));
  EXPECT_EQ(error.rfind("invalid schema at #: \"pattern\" \"([\" is not a valid ECMAScript "
                        "regular expression: ",
                        0),
            0u)
      << error;
  EXPECT_NE(compileError(json::parse(R"({"patternProperties": {"a{2": {}}})")).find("\"a{2\""),
            std::string::npos);
}

TEST(JsonSchemaTest, CompileRejectsUnresolvableRefs) {
  EXPECT_EQ(compileError(json::parse(R"({"properties": {"a": {"$ref": "#/definitions/nope"}}})")),
            "invalid schema at #/properties/a: $ref \"#/definitions/nope\" cannot be resolved: "
            "nothing at \"/definitions/nope\"");
  EXPECT_EQ(compileError(json::parse(R"({"$ref": "https://example.com/s.json"})")),
            "invalid schema at #: $ref \"https://example.com/s.json\" cannot be resolved: only "
            "references within this schema (\"#/...\") and to the draft-07 meta-schema are "
            "supported");
  EXPECT_EQ(compileError(json::parse(R"({"$ref": "#anchor"})")),
            "invalid schema at #: $ref \"#anchor\" cannot be resolved: only JSON-pointer "
            "fragments (\"#/...\") are supported");
  EXPECT_NE(compileError(json::parse(R"({"$ref": "#/a~2"})")).find("not a valid JSON pointer"),
            std::string::npos);
  EXPECT_EQ(compileError(json::parse(R"({"$ref": 1})")),
            "invalid schema at #: \"$ref\" must be a string, got integer");
}

TEST(JsonSchemaTest, RefsToTheDocumentsOwnIdResolve) {
  const JsonSchema schema = mustCompile(json::parse(R"({
    "$id": "https://kiln.example/webhook.json",
    "properties": {"n": {"$ref": "https://kiln.example/webhook.json#/definitions/n"}},
    "definitions": {"n": {"type": "integer"}}
  })"));
  EXPECT_EQ(check(schema, json::parse(R"({"n": "1"})")),
            (Violations{{"/n", "must be an integer, got string"}}));
}

TEST(JsonSchemaTest, CompileRejectsRefCyclesThatNeverReachAValue) {
  EXPECT_EQ(compileError(json::parse(R"({"$ref": "#"})")),
            "invalid schema at #: reference cycle that never reaches a value: # -> #");
  EXPECT_EQ(compileError(json::parse(R"({
    "definitions": {"a": {"allOf": [{"$ref": "#/definitions/b"}]}, "b": {"$ref": "#/definitions/a"}}
  })")),
            "invalid schema at #/definitions/a: reference cycle that never reaches a value: "
            "#/definitions/a -> #/definitions/a/allOf/0 -> #/definitions/b -> #/definitions/a");
}

TEST(JsonSchemaTest, CompileRejectsOtherDrafts) {
  EXPECT_EQ(
      compileError(json::parse(R"({"$schema": "https://json-schema.org/draft/2020-12/schema"})")),
      "unsupported \"$schema\" \"https://json-schema.org/draft/2020-12/schema\": only "
      "draft-07 (\"http://json-schema.org/draft-07/schema#\") is supported");
  mustCompile(json::parse(R"({"$schema": "https://json-schema.org/draft-07/schema"})"));
}

TEST(JsonSchemaTest, CopiesShareTheCompiledSchema) {
  std::optional<JsonSchema> copy;
  {
    const JsonSchema original = mustCompile(kWebhookSchema);
    copy = original;
  }
  EXPECT_EQ(check(*copy, json::parse(R"({"url": "https://x", "retries": -2})")),
            (Violations{{"/retries", "must be >= 0, got -2"}}));
}

}  // namespace
}  // namespace kiln::config
