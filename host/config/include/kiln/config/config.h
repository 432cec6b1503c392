// Kiln's YAML configuration: parsing, structural validation with
// file:line:column diagnostics, ${VAR} substitution and *_file secrets.
//
// Loading happens in two steps so that the parser needs no plugin knowledge:
//   1. loadConfig() parses the file and checks everything the host itself
//      owns (keys, types, references between instances and projects).
//   2. validatePluginConfigs() checks each instance's `config:` against the
//      JSON Schema of the plugin it names, reported at the offending line.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/domain/plugin_kind.h"

namespace kiln::config {

struct SourceLocation {
  std::string file;
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based
};

struct Diagnostic {
  SourceLocation where;
  std::string message;

  // "file:line:column: message", the form editors and CI logs link.
  std::string format() const;
};

struct ServerConfig {
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 8080;
  int workers = 2;
  int64_t max_body_bytes = 1 << 20;
  int64_t max_prompt_bytes = 64 * 1024;
  int shutdown_grace_s = 30;
  int max_attempts = 3;  // attempts of a build before a lost worker fails it
  int lease_s = 30;      // a worker's lease on a build; renewed every lease_s / 3
  // Notifications: the first retry after a failed delivery comes after
  // delivery_backoff_s, each next one twice as late (at most an hour apart),
  // until the delivery is delivery_max_age_s old; then it is given up.
  int delivery_backoff_s = 5;
  int delivery_max_age_s = 12 * 3600;
  // Build logs, artifacts and workspaces live below it; relative to the
  // config file's folder. Empty: "kiln-data" there.
  std::string data_dir;
  std::string git_author_name = "Kiln";  // author and committer of kiln's commits
  std::string git_author_email = "kiln@localhost";
  bool keep_failed_workspaces = false;  // keep a failed build's checkout to look into
};

struct StoreConfig {
  enum class Kind { kSqlite, kPostgres };
  Kind kind = Kind::kSqlite;
  std::string sqlite_path = "kiln.db";  // resolved against the config's directory
  std::string postgres_url;             // secret: never logged
};

struct PluginsConfig {
  bool bundled = true;                   // also load the plugins shipped with kiln
  std::vector<std::string> directories;  // absolute after loading
};

struct InstanceConfig {
  std::string name;
  domain::PluginRef plugin;
  nlohmann::json config = nlohmann::json::object();  // ${VAR} and *_file resolved
  SourceLocation where;                              // of the instance's key
  SourceLocation plugin_where;                       // of its `plugin:` value
  // Where each value under `config:` sits, by JSON pointer ("" = the
  // `config:` node itself, "/retries", "/headers/0"), so that schema errors
  // point at the line that holds the bad value.
  std::map<std::string, SourceLocation> config_locations;
  // Pointers of values that hold a secret (taken from the environment or a
  // *_file): diagnostics must never show them.
  std::set<std::string> secret_pointers;
};

// Which instance serves each stage of a build.
struct StageBindings {
  std::optional<std::string> agent;
  std::optional<std::string> template_provider;
  std::optional<std::string> git_host;
  std::optional<std::string> ci_trigger;
  std::optional<std::vector<std::string>> notifiers;
};

struct ProjectConfig {
  std::string id;
  std::string repo_url;
  std::string default_branch = "main";
  StageBindings stages;  // after `defaults:` were applied
  int max_running_builds = 1;
  int max_pending_builds = 100;
  int max_timeout_s = 3600;
  bool push_to_task_branch = false;  // push to kiln/<task_id>, not the build's branch
  // Workspace files kept as artifacts after the agent ran (fnmatch globs on
  // paths relative to the checkout, e.g. "reports/*.xml").
  std::vector<std::string> artifacts;
  SourceLocation where;
};

struct Config {
  std::string path;      // the file as given
  std::string base_dir;  // relative paths in the file are resolved against it
  ServerConfig server;
  StoreConfig store;
  PluginsConfig plugins;
  std::map<std::string, std::string> secrets;  // name -> value
  std::map<std::string, InstanceConfig> instances;
  std::map<std::string, ProjectConfig> projects;
  // `defaults:` as a project without id and repo_url: what projects created
  // through the API use.
  ProjectConfig defaults;
};

// Reads environment variables; injectable so tests need not touch the
// process environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup processEnvironment();

struct LoadResult {
  std::optional<Config> config;         // set when diagnostics is empty
  std::vector<Diagnostic> diagnostics;  // every error found, in file order
  // When there are diagnostics: what could be read, with every instance
  // that had errors of its own left out, so that callers can go on checking
  // the rest (plugin configs) and report all errors in one pass.
  std::optional<Config> partial;
};

LoadResult loadConfig(const std::string& path, const EnvLookup& env = processEnvironment());
LoadResult parseConfig(const std::string& yaml_text, const std::string& path_for_messages,
                       const EnvLookup& env = processEnvironment());

// What the validator needs to know of a plugin.
struct PluginSchemaInfo {
  std::string file;              // the library that provides it, for messages
  nlohmann::json config_schema;  // JSON Schema draft-07
};
using PluginLookup = std::function<const PluginSchemaInfo*(const domain::PluginRef&)>;

// Checks that every instance names a known plugin (suggesting the nearest of
// `known` when it does not) and that its config passes that plugin's schema;
// fills schema `default`s into each valid config.
std::vector<Diagnostic> validatePluginConfigs(Config& config, const PluginLookup& lookup,
                                              const std::vector<domain::PluginRef>& known);

}  // namespace kiln::config
