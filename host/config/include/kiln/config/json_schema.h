// A JSON Schema (draft-07) validator for plugin configuration.
//
// Rationale: Debian 12 packages no C++ JSON Schema validator, so we
// implement draft-07's validation keywords and check them against the
// official JSON-Schema-Test-Suite (tests/config/json_schema_suite_test.cc):
// type, enum, const, default, the numeric, string, array and object
// keywords, properties/patternProperties/additionalProperties, required,
// dependencies, propertyNames, items/additionalItems/contains, allOf, anyOf,
// oneOf, not, if/then/else, definitions and $ref within the document ("#",
// "#/definitions/...", JSON pointers, the draft-07 meta-schema). `format`,
// content keywords and unknown keywords are ignored, as the specification
// allows; compile() reports them (ignoredKeywords) and the plugin loader
// warns the plugin's author about them.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kiln::config {

struct SchemaViolation {
  std::string instance_path;  // JSON pointer into the validated value ("" = root)
  std::string message;        // what is wrong, e.g. "must be >= 1, got 0"
};

class JsonSchema {
 public:
  // Checks the schema itself (a schema must be an object or a boolean; known
  // keywords must have the right shape; a $ref must resolve). Returns nullopt
  // with *error set when it is unusable.
  static std::optional<JsonSchema> compile(const nlohmann::json& schema, std::string* error);

  // Every violation found (not only the first), in document order.
  std::vector<SchemaViolation> validate(const nlohmann::json& instance) const;

  // A copy of `instance` with the `default` of each absent property filled in,
  // recursively through `properties` of objects that are present or defaulted.
  nlohmann::json withDefaults(const nlohmann::json& instance) const;

  // Keywords the schema uses that this validator does not implement.
  const std::vector<std::string>& ignoredKeywords() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace kiln::config
