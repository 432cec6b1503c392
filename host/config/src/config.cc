#include "kiln/config/config.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <regex>
#include <set>
#include <utility>

#include <yaml-cpp/yaml.h>

#include "suggest.h"
#include "yaml_json.h"

namespace kiln::config {

using internal::Context;
using internal::describe;
using internal::MapEntry;
using internal::quote;
using internal::Scalar;
using internal::shown;

std::string Diagnostic::format() const {
  if (where.line == 0) return where.file + ": " + message;
  return where.file + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " +
         message;
}

EnvLookup processEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

namespace {

constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

const std::vector<std::string> kTopKeys = {"server",    "store",    "plugins", "secrets",
                                           "instances", "defaults", "projects"};
const std::vector<std::string> kServerKeys = {"listen",
                                              "workers",
                                              "max_body_bytes",
                                              "max_prompt_bytes",
                                              "shutdown_grace_s",
                                              "max_attempts",
                                              "lease_s",
                                              "delivery_backoff_s",
                                              "delivery_max_age_s",
                                              "data_dir",
                                              "git_author_name",
                                              "git_author_email",
                                              "keep_failed_workspaces"};
const std::vector<std::string> kStoreKeys = {"sqlite", "postgres"};
const std::vector<std::string> kSqliteKeys = {"path"};
const std::vector<std::string> kPostgresKeys = {"url", "url_file"};
const std::vector<std::string> kPluginsKeys = {"bundled", "directories"};
const std::vector<std::string> kInstanceKeys = {"plugin", "config"};
const std::vector<std::string> kProjectKeys = {"repo_url",
                                               "default_branch",
                                               "agent",
                                               "template_provider",
                                               "git_host",
                                               "ci_trigger",
                                               "notifiers",
                                               "max_running_builds",
                                               "max_pending_builds",
                                               "max_timeout_s",
                                               "push_to_task_branch",
                                               "artifacts"};

const std::string kNameRule =
    "must match ^[a-z0-9][a-z0-9._-]{0,62}$ (lowercase letters, digits, \".\", \"_\" and "
    "\"-\", starting with a letter or digit, at most 63 characters)";

bool isValidName(const std::string& name) {
  static const std::regex kName("[a-z0-9][a-z0-9._-]{0,62}");
  return std::regex_match(name, kName);
}

bool isPlainInteger(const std::string& text) {
  static const std::regex kInteger("[-+]?[0-9]+");
  return std::regex_match(text, kInteger);
}

// "host:port" or "[v6]:port"; port 0..65535.
bool parseListen(const std::string& text, std::string* host, uint16_t* port) {
  std::string port_text;
  if (text.starts_with("[")) {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    *host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    *host = text.substr(0, colon);
    // A bare IPv6 address would be ambiguous with the port separator.
    if (host->find(':') != std::string::npos) return false;
    port_text = text.substr(colon + 1);
  }
  if (host->empty() || port_text.empty() || port_text.size() > 5) return false;
  unsigned value = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || value > 65535) {
    return false;
  }
  *port = static_cast<uint16_t>(value);
  return true;
}

struct Stage {
  const char* key;       // in a project
  const char* singular;  // in messages
  domain::PluginKind kind;
};

constexpr Stage kStages[] = {
    {"agent", "agent", domain::PluginKind::kCodeAgent},
    {"template_provider", "template_provider", domain::PluginKind::kTemplateProvider},
    {"git_host", "git_host", domain::PluginKind::kGitHost},
    {"ci_trigger", "ci_trigger", domain::PluginKind::kCiTrigger},
    {"notifiers", "notifier", domain::PluginKind::kNotifier},
};

// A reference from a project (or `defaults:`) to an instance, checked once
// every instance is known.
struct BindingUse {
  std::string owner;  // `project "demo"` or `defaults`
  std::string stage;
  std::string name;
  std::string name_shown;
  domain::PluginKind kind;
  SourceLocation where;
};

// What one project, or `defaults:`, sets.
struct ProjectFields {
  bool has_repo_url = false;
  std::optional<std::string> repo_url;
  std::optional<std::string> default_branch;
  StageBindings stages;
  std::optional<int> max_running_builds;
  std::optional<int> max_pending_builds;
  std::optional<int> max_timeout_s;
  std::optional<bool> push_to_task_branch;
  std::optional<std::vector<std::string>> artifacts;
};

class Loader {
 public:
  Loader(Context& ctx, Config* config) : ctx_(ctx), config_(config) {}

  void load(const std::vector<YAML::Node>& documents) {
    if (documents.empty() || documents[0].IsNull()) {
      ctx_.error(SourceLocation{ctx_.file(), 0, 0}, "empty configuration");
      return;
    }
    if (documents.size() > 1) {
      ctx_.error(ctx_.at(documents[1]),
                 "only one YAML document is allowed; remove this \"---\" document");
    }
    const YAML::Node& root = documents[0];
    if (!root.IsMap()) {
      ctx_.error(ctx_.at(root), "the configuration must be a mapping of sections (" +
                                    internal::joinNames(kTopKeys) + "), got " +
                                    describe(root, std::nullopt));
      return;
    }
    const std::vector<MapEntry> entries = internal::mapEntries(ctx_, root);
    std::map<std::string, const MapEntry*> sections;
    for (const MapEntry& e : entries) {
      if (std::find(kTopKeys.begin(), kTopKeys.end(), e.key) == kTopKeys.end()) {
        unknownKey(e, "at the top level", kTopKeys);
      } else {
        sections[e.key] = &e;
      }
    }
    const auto section = [&](const char* name) -> const MapEntry* {
      auto it = sections.find(name);
      return it == sections.end() ? nullptr : it->second;
    };
    if (auto* e = section("server")) loadServer(*e);
    if (auto* e = section("store")) loadStore(*e);
    if (auto* e = section("plugins")) loadPlugins(*e);
    if (auto* e = section("secrets")) loadSecrets(*e);
    if (auto* e = section("instances")) loadInstances(*e);
    ProjectFields defaults;
    if (auto* e = section("defaults")) {
      if (auto sub = mapping(*e, "defaults")) loadProjectFields(*sub, "defaults", true, &defaults);
    }
    if (auto* e = section("projects")) loadProjects(*e, defaults);
    // What a project created through the API gets.
    ProjectConfig& d = config_->defaults;
    d.default_branch = defaults.default_branch.value_or(d.default_branch);
    d.stages = defaults.stages;
    d.max_running_builds = defaults.max_running_builds.value_or(d.max_running_builds);
    d.max_pending_builds = defaults.max_pending_builds.value_or(d.max_pending_builds);
    d.max_timeout_s = defaults.max_timeout_s.value_or(d.max_timeout_s);
    d.push_to_task_branch = defaults.push_to_task_branch.value_or(d.push_to_task_branch);
    d.artifacts = defaults.artifacts.value_or(d.artifacts);
    checkBindings();
  }

 private:
  // A section's entries; an empty value (say, all lines commented out)
  // counts as an empty mapping.
  std::optional<std::vector<MapEntry>> mapping(const MapEntry& e, const std::string& label) {
    if (e.value.IsNull()) return std::vector<MapEntry>{};
    if (!e.value.IsMap()) {
      ctx_.error(e.value_where,
                 label + " must be a mapping, got " + describe(e.value, std::nullopt));
      return std::nullopt;
    }
    return internal::mapEntries(ctx_, e.value);
  }

  void unknownKey(const MapEntry& e, const std::string& where_text,
                  const std::vector<std::string>& keys) {
    std::string message = "unknown key " + quote(e.key) + " " + where_text;
    if (auto suggestion = internal::nearest(e.key, keys)) {
      message += " (did you mean " + quote(*suggestion) + "?)";
    } else {
      message += " (expected one of: " + internal::joinNames(keys) + ")";
    }
    ctx_.error(e.key_where, std::move(message));
  }

  // nullopt with the problem reported, or the scalar after substitution.
  std::optional<Scalar> scalarOf(const YAML::Node& node, const SourceLocation& where) {
    if (!node.IsScalar()) return std::nullopt;
    return internal::resolveScalar(ctx_, node, where);
  }

  std::optional<int64_t> readInt(const MapEntry& e, const std::string& label, int64_t min,
                                 int64_t max) {
    std::optional<Scalar> s;
    if (e.value.IsScalar()) {
      s = internal::resolveScalar(ctx_, e.value, e.value_where);
      if (!s) return std::nullopt;
    }
    const std::string expected = label + " must be an integer >= " + std::to_string(min);
    if (s && s->plain && isPlainInteger(s->text)) {
      std::string_view digits = s->text;
      if (digits.starts_with("+")) digits.remove_prefix(1);
      int64_t value = 0;
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
      const bool parsed = ec == std::errc() && end == digits.data() + digits.size();
      if (parsed && value >= min && value <= max) return value;
      if (parsed && value < min) {
        ctx_.error(e.value_where, expected + ", got " + shown(*s));
      } else {
        ctx_.error(e.value_where, label + " must be an integer from " + std::to_string(min) +
                                      " to " + std::to_string(max) + ", got " + shown(*s));
      }
      return std::nullopt;
    }
    std::string got = describe(e.value, s);
    if (s && !s->plain && isPlainInteger(s->text)) {
      got = "the string " + got + " (remove the quotes)";
    }
    ctx_.error(e.value_where, expected + ", got " + got);
    return std::nullopt;
  }

  std::optional<bool> readBool(const MapEntry& e, const std::string& label) {
    std::optional<Scalar> s;
    if (e.value.IsScalar()) {
      s = internal::resolveScalar(ctx_, e.value, e.value_where);
      if (!s) return std::nullopt;
      if (s->plain && s->text == "true") return true;
      if (s->plain && s->text == "false") return false;
    }
    std::string got = describe(e.value, s);
    if (s && !s->plain && (s->text == "true" || s->text == "false")) {
      got = "the string " + got + " (remove the quotes)";
    }
    ctx_.error(e.value_where, label + " must be true or false, got " + got);
    return std::nullopt;
  }

  std::optional<Scalar> readString(const YAML::Node& node, const SourceLocation& where,
                                   const std::string& label, bool non_empty) {
    const std::string expected =
        label + (non_empty ? " must be a non-empty string" : " must be a string");
    if (!node.IsScalar()) {
      ctx_.error(where, expected + ", got " + describe(node, std::nullopt));
      return std::nullopt;
    }
    auto s = internal::resolveScalar(ctx_, node, where);
    if (!s) return std::nullopt;
    if (non_empty && s->text.empty()) {
      ctx_.error(where, expected + ", got " + shown(*s));
      return std::nullopt;
    }
    return s;
  }

  std::optional<Scalar> readString(const MapEntry& e, const std::string& label, bool non_empty) {
    return readString(e.value, e.value_where, label, non_empty);
  }

  struct ListItem {
    Scalar value;
    SourceLocation where;
  };

  std::optional<std::vector<ListItem>> readStringList(const MapEntry& e, const std::string& label) {
    if (!e.value.IsSequence()) {
      ctx_.error(e.value_where,
                 label + " must be a list of strings, got " + describe(e.value, std::nullopt));
      return std::nullopt;
    }
    std::vector<ListItem> items;
    bool ok = true;
    size_t i = 0;
    for (const YAML::Node& element : e.value) {
      const SourceLocation where = ctx_.at(element);
      auto s = readString(element, where, label + "[" + std::to_string(i++) + "]", true);
      if (s) {
        items.push_back(ListItem{std::move(*s), where});
      } else {
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return items;
  }

  void loadServer(const MapEntry& section) {
    auto entries = mapping(section, "server");
    if (!entries) return;
    ServerConfig& server = config_->server;
    for (const MapEntry& e : *entries) {
      const std::string label = "server." + e.key;
      if (e.key == "listen") {
        if (auto s = readString(e, label, true)) {
          if (!parseListen(s->text, &server.listen_host, &server.listen_port)) {
            ctx_.error(e.value_where, label +
                                          " must be \"host:port\" with a port from 0 to 65535 "
                                          "(e.g. 127.0.0.1:8080 or [::1]:8080), got " +
                                          shown(*s));
          }
        }
      } else if (e.key == "workers") {
        if (auto v = readInt(e, label, 1, kIntMax)) server.workers = static_cast<int>(*v);
      } else if (e.key == "max_body_bytes") {
        if (auto v = readInt(e, label, 1, kInt64Max)) server.max_body_bytes = *v;
      } else if (e.key == "max_prompt_bytes") {
        if (auto v = readInt(e, label, 1, kInt64Max)) server.max_prompt_bytes = *v;
      } else if (e.key == "shutdown_grace_s") {
        if (auto v = readInt(e, label, 0, kIntMax)) server.shutdown_grace_s = static_cast<int>(*v);
      } else if (e.key == "max_attempts") {
        if (auto v = readInt(e, label, 1, 100)) server.max_attempts = static_cast<int>(*v);
      } else if (e.key == "lease_s") {
        if (auto v = readInt(e, label, 3, 3600)) server.lease_s = static_cast<int>(*v);
      } else if (e.key == "delivery_backoff_s") {
        if (auto v = readInt(e, label, 1, 3600)) server.delivery_backoff_s = static_cast<int>(*v);
      } else if (e.key == "delivery_max_age_s") {
        if (auto v = readInt(e, label, 1, 30 * 24 * 3600)) {
          server.delivery_max_age_s = static_cast<int>(*v);
        }
      } else if (e.key == "git_author_name") {
        if (auto v = readString(e, label, true)) server.git_author_name = v->text;
      } else if (e.key == "git_author_email") {
        if (auto v = readString(e, label, true)) server.git_author_email = v->text;
      } else if (e.key == "keep_failed_workspaces") {
        if (auto v = readBool(e, label)) server.keep_failed_workspaces = *v;
      } else if (e.key == "data_dir") {
        if (auto v = readString(e, label, true)) {
          server.data_dir = internal::resolvePath(ctx_.baseDir(), v->text);
        }
      } else {
        unknownKey(e, "in server", kServerKeys);
      }
    }
  }

  void loadStore(const MapEntry& section) {
    auto entries = mapping(section, "store");
    if (!entries) return;
    const MapEntry* sqlite = nullptr;
    const MapEntry* postgres = nullptr;
    bool unknown = false;
    for (const MapEntry& e : *entries) {
      if (e.key == "sqlite") {
        sqlite = &e;
      } else if (e.key == "postgres") {
        postgres = &e;
      } else {
        unknownKey(e, "in store", kStoreKeys);
        unknown = true;
      }
    }
    if (sqlite) loadSqlite(*sqlite);
    if (postgres) loadPostgres(*postgres);
    if (sqlite && postgres) {
      const MapEntry* later = sqlite->key_where.line > postgres->key_where.line ? sqlite : postgres;
      ctx_.error(later->key_where, "store must set only one of sqlite or postgres; remove one");
    } else if (!sqlite && !postgres && !unknown) {
      ctx_.error(section.key_where,
                 "store must set one of sqlite or postgres (or leave store out for sqlite)");
    }
    config_->store.kind =
        postgres && !sqlite ? StoreConfig::Kind::kPostgres : StoreConfig::Kind::kSqlite;
  }

  void loadSqlite(const MapEntry& section) {
    auto entries = mapping(section, "store.sqlite");
    if (!entries) return;
    for (const MapEntry& e : *entries) {
      if (e.key == "path") {
        if (auto s = readString(e, "store.sqlite.path", true)) {
          config_->store.sqlite_path = internal::resolvePath(ctx_.baseDir(), s->text);
        }
      } else {
        unknownKey(e, "in store.sqlite", kSqliteKeys);
      }
    }
  }

  void loadPostgres(const MapEntry& section) {
    auto entries = mapping(section, "store.postgres");
    if (!entries) return;
    const MapEntry* url = nullptr;
    const MapEntry* url_file = nullptr;
    for (const MapEntry& e : *entries) {
      if (e.key == "url") {
        url = &e;
      } else if (e.key == "url_file") {
        url_file = &e;
      } else {
        unknownKey(e, "in store.postgres", kPostgresKeys);
      }
    }
    if (url && url_file) {
      ctx_.error(url_file->key_where,
                 "store.postgres: both \"url\" and \"url_file\" are set; keep one");
    } else if (!url && !url_file) {
      ctx_.error(section.key_where,
                 "store.postgres must set url (e.g. url: ${KILN_DATABASE_URL}) or url_file");
    } else if (url) {
      if (auto s = readString(*url, "store.postgres.url", true)) {
        config_->store.postgres_url = s->text;
      }
    } else if (auto s = readString(*url_file, "store.postgres.url_file", true)) {
      const std::string path = internal::resolvePath(ctx_.baseDir(), s->text);
      std::string content;
      std::string error;
      if (!internal::readSecretFile(path, &content, &error)) {
        ctx_.error(url_file->value_where,
                   "store.postgres.url_file: cannot read " + quote(path) + ": " + error);
      } else if (content.empty()) {
        ctx_.error(url_file->value_where, "store.postgres.url_file: " + quote(path) + " is empty");
      } else {
        config_->store.postgres_url = std::move(content);
      }
    }
  }

  void loadPlugins(const MapEntry& section) {
    auto entries = mapping(section, "plugins");
    if (!entries) return;
    for (const MapEntry& e : *entries) {
      if (e.key == "bundled") {
        if (auto v = readBool(e, "plugins.bundled")) config_->plugins.bundled = *v;
      } else if (e.key == "directories") {
        if (auto items = readStringList(e, "plugins.directories")) {
          config_->plugins.directories.clear();
          for (const ListItem& item : *items) {
            config_->plugins.directories.push_back(
                internal::resolvePath(ctx_.baseDir(), item.value.text));
          }
        }
      } else {
        unknownKey(e, "in plugins", kPluginsKeys);
      }
    }
  }

  void loadSecrets(const MapEntry& section) {
    auto entries = mapping(section, "secrets");
    if (!entries) return;
    std::set<std::string> names;
    for (const MapEntry& e : *entries) names.insert(e.key);
    for (const MapEntry& e : *entries) {
      auto s = readString(e, "secrets." + e.key, false);
      if (!s) continue;
      const auto stem = internal::fileKeyStem(e.key);
      if (!stem) {
        config_->secrets[e.key] = std::move(s->text);
        continue;
      }
      if (names.count(*stem) != 0) {
        ctx_.error(e.key_where,
                   "secrets: both " + quote(*stem) + " and " + quote(e.key) + " are set; keep one");
        continue;
      }
      const std::string path = internal::resolvePath(ctx_.baseDir(), s->text);
      std::string content;
      std::string error;
      if (!internal::readSecretFile(path, &content, &error)) {
        ctx_.error(e.value_where,
                   "secrets." + e.key + ": cannot read " + quote(path) + ": " + error);
        continue;
      }
      config_->secrets[*stem] = std::move(content);
    }
  }

  void loadInstances(const MapEntry& section) {
    auto entries = mapping(section, "instances");
    if (!entries) return;
    for (const MapEntry& ie : *entries) {
      const std::string label = "instance " + quote(ie.key);
      const size_t errors_before = ctx_.diagnostics().size();
      if (!isValidName(ie.key)) {
        ctx_.error(ie.key_where, "instance name " + quote(ie.key) + " " + kNameRule);
      }
      // Registered even when broken, so projects naming it get no second error.
      std::optional<domain::PluginKind>& kind = instance_kinds_[ie.key];
      InstanceConfig instance;
      instance.name = ie.key;
      instance.where = ie.key_where;
      instance.plugin_where = ie.key_where;
      instance.config_locations[""] = ie.key_where;
      auto sub = mapping(ie, label);
      if (!sub) continue;
      const MapEntry* plugin = nullptr;
      for (const MapEntry& e : *sub) {
        if (e.key == "plugin") {
          plugin = &e;
        } else if (e.key == "config") {
          if (e.value.IsNull()) {
            instance.config_locations[""] = e.value_where;
          } else if (!e.value.IsMap()) {
            ctx_.error(e.value_where, label + ": config must be a mapping, got " +
                                          describe(e.value, std::nullopt));
          } else {
            instance.config_locations.clear();
            internal::convertInstanceConfig(ctx_, e.value, e.value_where, label, &instance);
          }
        } else {
          unknownKey(e, "in " + label, kInstanceKeys);
        }
      }
      if (!plugin) {
        ctx_.error(ie.key_where,
                   label + ": missing required key \"plugin\" (e.g. plugin: notifier/webhook)");
      } else if (auto s = readString(*plugin, label + ": plugin", true)) {
        instance.plugin_where = plugin->value_where;
        std::string error;
        if (auto ref = domain::parsePluginRef(s->text, &error)) {
          instance.plugin = *ref;
          kind = ref->kind;
        } else if (s->substituted) {
          ctx_.error(plugin->value_where,
                     label + ": plugin " + shown(*s) + " is not \"<kind>/<id>\"");
        } else {
          ctx_.error(plugin->value_where, label + ": plugin: " + error);
        }
      }
      // Only an instance without errors of its own goes on to plugin
      // validation, so a broken one yields no second, derived error.
      if (ctx_.diagnostics().size() == errors_before) {
        config_->instances[ie.key] = std::move(instance);
      }
    }
  }

  void loadProjectFields(const std::vector<MapEntry>& entries, const std::string& owner,
                         bool is_defaults, ProjectFields* fields) {
    const auto labelOf = [&](const std::string& key) {
      return is_defaults ? "defaults." + key : owner + ": " + key;
    };
    for (const MapEntry& e : entries) {
      const Stage* stage = nullptr;
      for (const Stage& s : kStages) {
        if (e.key == s.key) stage = &s;
      }
      if (e.key == "repo_url") {
        if (is_defaults) {
          ctx_.error(e.key_where,
                     "defaults: repo_url cannot have a default; set it in each project");
          continue;
        }
        fields->has_repo_url = true;
        if (auto s = readString(e, labelOf(e.key), true)) fields->repo_url = s->text;
      } else if (e.key == "default_branch") {
        if (auto s = readString(e, labelOf(e.key), true)) fields->default_branch = s->text;
      } else if (e.key == "notifiers") {
        if (auto items = readStringList(e, labelOf(e.key))) {
          fields->stages.notifiers.emplace();
          for (ListItem& item : *items) {
            bindings_.push_back(BindingUse{owner, stage->singular, item.value.text,
                                           shown(item.value), stage->kind, item.where});
            fields->stages.notifiers->push_back(std::move(item.value.text));
          }
        }
      } else if (stage) {
        if (auto s = readString(e, labelOf(e.key), true)) {
          bindings_.push_back(
              BindingUse{owner, stage->singular, s->text, shown(*s), stage->kind, e.value_where});
          std::optional<std::string>* slot = e.key == "agent" ? &fields->stages.agent
                                             : e.key == "template_provider"
                                                 ? &fields->stages.template_provider
                                             : e.key == "git_host" ? &fields->stages.git_host
                                                                   : &fields->stages.ci_trigger;
          *slot = s->text;
        }
      } else if (e.key == "max_running_builds") {
        if (auto v = readInt(e, labelOf(e.key), 1, kIntMax)) {
          fields->max_running_builds = static_cast<int>(*v);
        }
      } else if (e.key == "max_pending_builds") {
        if (auto v = readInt(e, labelOf(e.key), 1, kIntMax)) {
          fields->max_pending_builds = static_cast<int>(*v);
        }
      } else if (e.key == "max_timeout_s") {
        if (auto v = readInt(e, labelOf(e.key), 1, kIntMax)) {
          fields->max_timeout_s = static_cast<int>(*v);
        }
      } else if (e.key == "push_to_task_branch") {
        if (auto v = readBool(e, labelOf(e.key))) fields->push_to_task_branch = *v;
      } else if (e.key == "artifacts") {
        if (auto items = readStringList(e, labelOf(e.key))) {
          fields->artifacts.emplace();
          for (ListItem& item : *items) fields->artifacts->push_back(std::move(item.value.text));
        }
      } else if (is_defaults) {
        std::vector<std::string> keys(kProjectKeys.begin() + 1, kProjectKeys.end());
        unknownKey(e, "in defaults", keys);
      } else {
        unknownKey(e, "in " + owner, kProjectKeys);
      }
    }
  }

  void loadProjects(const MapEntry& section, const ProjectFields& defaults) {
    auto entries = mapping(section, "projects");
    if (!entries) return;
    for (const MapEntry& pe : *entries) {
      const std::string label = "project " + quote(pe.key);
      if (!isValidName(pe.key)) {
        ctx_.error(pe.key_where, "project id " + quote(pe.key) + " " + kNameRule);
      }
      auto sub = mapping(pe, label);
      if (!sub) continue;
      ProjectFields fields;
      loadProjectFields(*sub, label, false, &fields);
      if (!fields.has_repo_url) {
        ctx_.error(pe.key_where, label + ": missing required key \"repo_url\"");
      }
      ProjectConfig project;
      project.id = pe.key;
      project.where = pe.key_where;
      project.repo_url = fields.repo_url.value_or("");
      project.default_branch =
          fields.default_branch.value_or(defaults.default_branch.value_or(project.default_branch));
      const auto pick = [](const auto& own, const auto& fallback) { return own ? own : fallback; };
      project.stages.agent = pick(fields.stages.agent, defaults.stages.agent);
      project.stages.template_provider =
          pick(fields.stages.template_provider, defaults.stages.template_provider);
      project.stages.git_host = pick(fields.stages.git_host, defaults.stages.git_host);
      project.stages.ci_trigger = pick(fields.stages.ci_trigger, defaults.stages.ci_trigger);
      project.stages.notifiers = pick(fields.stages.notifiers, defaults.stages.notifiers);
      project.max_running_builds = fields.max_running_builds.value_or(
          defaults.max_running_builds.value_or(project.max_running_builds));
      project.max_pending_builds = fields.max_pending_builds.value_or(
          defaults.max_pending_builds.value_or(project.max_pending_builds));
      project.max_timeout_s =
          fields.max_timeout_s.value_or(defaults.max_timeout_s.value_or(project.max_timeout_s));
      project.push_to_task_branch = fields.push_to_task_branch.value_or(
          defaults.push_to_task_branch.value_or(project.push_to_task_branch));
      project.artifacts = fields.artifacts.value_or(defaults.artifacts.value_or(project.artifacts));
      config_->projects[pe.key] = std::move(project);
    }
  }

  // Each binding names a defined instance of the stage's kind. Those in
  // `defaults:` are checked once, where they are written.
  void checkBindings() {
    std::vector<std::string> names;
    for (const auto& [name, kind] : instance_kinds_) names.push_back(name);
    for (const BindingUse& b : bindings_) {
      const auto it = instance_kinds_.find(b.name);
      if (it == instance_kinds_.end()) {
        ctx_.error(b.where, b.owner + ": " + b.stage + " " + b.name_shown +
                                " is not a defined instance (" +
                                (names.empty() ? std::string("no instances are defined")
                                               : "instances: " + internal::joinNames(names)) +
                                ")");
      } else if (it->second && *it->second != b.kind) {
        ctx_.error(b.where, b.owner + ": " + b.stage + " " + b.name_shown + " is a " +
                                std::string(domain::pluginKindName(*it->second)) +
                                " instance, expected a " +
                                std::string(domain::pluginKindName(b.kind)) + " instance");
      }
    }
  }

  Context& ctx_;
  Config* config_;
  std::map<std::string, std::optional<domain::PluginKind>> instance_kinds_;
  std::vector<BindingUse> bindings_;
};

bool before(const Diagnostic& a, const Diagnostic& b) {
  return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
}

}  // namespace

LoadResult parseConfig(const std::string& yaml_text, const std::string& path_for_messages,
                       const EnvLookup& env) {
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path_for_messages, ec);
  if (ec) absolute = path_for_messages;
  const std::string base_dir = absolute.parent_path().lexically_normal().string();

  Context ctx(path_for_messages, base_dir, env);
  Config config;
  config.path = path_for_messages;
  config.base_dir = base_dir;
  config.store.sqlite_path = internal::resolvePath(base_dir, config.store.sqlite_path);
  try {
    const std::vector<YAML::Node> documents = YAML::LoadAll(yaml_text);
    Loader(ctx, &config).load(documents);
  } catch (const YAML::Exception& e) {
    ctx.error(ctx.at(e.mark), e.msg);
  }

  LoadResult result;
  result.diagnostics = std::move(ctx.diagnostics());
  std::stable_sort(result.diagnostics.begin(), result.diagnostics.end(), before);
  if (result.diagnostics.empty()) {
    result.config = std::move(config);
  } else {
    result.partial = std::move(config);
  }
  return result;
}

LoadResult loadConfig(const std::string& path, const EnvLookup& env) {
  std::string text;
  std::string error;
  if (!internal::readFile(path, &text, &error)) {
    LoadResult result;
    result.diagnostics.push_back(
        Diagnostic{SourceLocation{path, 0, 0}, "cannot read configuration: " + error});
    return result;
  }
  return parseConfig(text, path, env);
}

}  // namespace kiln::config
