// Reading yaml-cpp nodes for the configuration loader: locations, duplicate
// keys, ${VAR} substitution, YAML 1.2 core-schema typing, *_file secrets,
// and the YAML -> JSON conversion of an instance's `config:`.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "kiln/config/config.h"

namespace kiln::config::internal {

// What every reader of one file shares: where it is, how to look up
// environment variables, and where errors go.
class Context {
 public:
  Context(std::string file, std::string base_dir, const EnvLookup& env)
      : file_(std::move(file)), base_dir_(std::move(base_dir)), env_(env) {}

  // 1-based; line 0 when yaml-cpp has no mark for the node.
  SourceLocation at(const YAML::Node& node) const;
  SourceLocation at(const YAML::Mark& mark) const;

  void error(SourceLocation where, std::string message) {
    diagnostics_.push_back(Diagnostic{std::move(where), std::move(message)});
  }

  const std::string& file() const { return file_; }
  const std::string& baseDir() const { return base_dir_; }
  const EnvLookup& env() const { return env_; }
  std::vector<Diagnostic>& diagnostics() { return diagnostics_; }

 private:
  std::string file_;
  std::string base_dir_;
  const EnvLookup& env_;
  std::vector<Diagnostic> diagnostics_;
};

struct MapEntry {
  std::string key;
  YAML::Node key_node;
  YAML::Node value;
  SourceLocation key_where;
  // The value's location; the key's when the value is empty (yaml-cpp marks
  // an empty value at the token after it, often the next line).
  SourceLocation value_where;
};

// The entries of a mapping in file order, each key once: a repeated key is
// reported ("duplicate key ...") and dropped, as is a key that is not a scalar.
std::vector<MapEntry> mapEntries(Context& ctx, const YAML::Node& map);

struct Scalar {
  std::string text;          // after ${VAR} substitution
  std::string raw;           // as written in the file
  bool plain = false;        // unquoted and untagged: typed by its content
  bool substituted = false;  // holds an environment value: never echo `text`
};

// Substitutes ${VAR} in a scalar node; reports each problem at `where` and
// returns nullopt if there was one.
std::optional<Scalar> resolveScalar(Context& ctx, const YAML::Node& node,
                                    const SourceLocation& where);

// ${VAR}, ${VAR:-default} (default when VAR is unset or empty) and $${ for a
// literal "${". Each problem is appended to *errors; *substituted is set when
// an environment value was used.
std::string expandVariables(std::string_view text, const EnvLookup& env,
                            std::vector<std::string>* errors, bool* substituted);

// A plain scalar typed by the YAML 1.2 core schema: null, bool, int, float,
// else string. .inf and .nan stay strings since JSON cannot hold them.
nlohmann::json typePlainScalar(const std::string& text);

// `text` as a JSON string literal for messages, shortened when long.
std::string quote(std::string_view text);

// A scalar as a message may show it: quoted, or only its source text when
// it holds an environment value.
std::string shown(const Scalar& scalar);

// "null", "a mapping", "a list" or shown(scalar) -- for "got ..." phrases.
std::string describe(const YAML::Node& node, const std::optional<Scalar>& scalar);

// `path` made absolute against `base_dir` and normalised.
std::string resolvePath(const std::string& base_dir, const std::string& path);

// Reads a whole file. On failure returns false with *error = strerror text.
bool readFile(const std::string& path, std::string* content, std::string* error);

// Reads a *_file secret: its content minus one trailing "\n" or "\r\n".
// On failure returns false with *error = strerror text.
bool readSecretFile(const std::string& path, std::string* content, std::string* error);

// "token" for "token_file"; nullopt when `key` is not <stem>_file.
std::optional<std::string> fileKeyStem(std::string_view key);

// RFC 6901: "~" -> "~0", "/" -> "~1".
std::string escapePointerToken(std::string_view token);

// Converts an instance's `config:` mapping into out->config, filling
// out->config_locations and out->secret_pointers. `label` prefixes messages
// (`instance "x"`).
void convertInstanceConfig(Context& ctx, const YAML::Node& node, const SourceLocation& where,
                           const std::string& label, InstanceConfig* out);

}  // namespace kiln::config::internal
