// validatePluginConfigs(): each instance's `config:` against its plugin's schema.
#include <algorithm>
#include <map>
#include <utility>

#include "kiln/config/config.h"
#include "kiln/config/json_schema.h"
#include "suggest.h"
#include "yaml_json.h"

namespace kiln::config {

namespace {

using nlohmann::json;

void replaceAll(std::string* text, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t at = text->find(from); at != std::string::npos; at = text->find(from, at)) {
    text->replace(at, from.size(), to);
    at += to.size();
  }
}

// Schema messages may quote the value they reject ("must be >= 1, got 0");
// a value from the environment or a *_file must not reach a log that way.
std::string redactSecrets(std::string message, const std::string& violation_path,
                          const InstanceConfig& instance) {
  constexpr const char* kHidden = "<secret value>";
  for (const std::string& pointer : instance.secret_pointers) {
    const json::json_pointer ptr(pointer);
    if (!instance.config.contains(ptr)) continue;
    const json& value = instance.config.at(ptr);
    if (value.is_string()) {
      const std::string& text = value.get_ref<const std::string&>();
      replaceAll(&message, json(text).dump(-1, ' ', false, json::error_handler_t::replace),
                 kHidden);
      // Short values would match innocent words; only quoted forms count then.
      if (text.size() >= 4) replaceAll(&message, text, kHidden);
    } else if (pointer == violation_path) {
      replaceAll(&message, "got " + value.dump(), std::string("got ") + kHidden);
    }
  }
  return message;
}

// The location of `pointer`, or of its nearest ancestor that has one (a
// missing property is reported where its object is).
SourceLocation locate(const InstanceConfig& instance, std::string pointer) {
  for (;;) {
    if (auto it = instance.config_locations.find(pointer); it != instance.config_locations.end()) {
      return it->second;
    }
    if (pointer.empty()) return instance.where;
    pointer.erase(pointer.rfind('/'));
  }
}

std::string unknownPluginMessage(const InstanceConfig& instance,
                                 const std::vector<domain::PluginRef>& known) {
  const domain::PluginRef& ref = instance.plugin;
  std::string message = "instance " + internal::quote(instance.name) + ": no plugin " +
                        internal::quote(ref.str()) + " is loaded";
  std::vector<std::string> same_kind;
  for (const domain::PluginRef& k : known) {
    if (k.kind == ref.kind) same_kind.push_back(k.id);
  }
  std::sort(same_kind.begin(), same_kind.end());
  const std::string kind(domain::pluginKindName(ref.kind));
  if (auto id = internal::nearest(ref.id, same_kind)) {
    return message + " (did you mean " + internal::quote(kind + "/" + *id) + "?)";
  }
  // The right id under another kind: the instance may name the wrong kind.
  for (const domain::PluginRef& k : known) {
    if (k.id == ref.id) return message + " (did you mean " + internal::quote(k.str()) + "?)";
  }
  if (same_kind.empty()) return message + " (no " + kind + " plugins are loaded)";
  return message + " (loaded " + kind + " plugins: " + internal::joinNames(same_kind) + ")";
}

struct CompiledSchema {
  std::optional<JsonSchema> schema;
  std::string error;
};

}  // namespace

std::vector<Diagnostic> validatePluginConfigs(Config& config, const PluginLookup& lookup,
                                              const std::vector<domain::PluginRef>& known) {
  std::vector<Diagnostic> diagnostics;
  std::map<domain::PluginRef, CompiledSchema> schemas;
  for (auto& [name, instance] : config.instances) {
    const PluginSchemaInfo* info = lookup(instance.plugin);
    if (info == nullptr) {
      diagnostics.push_back(
          Diagnostic{instance.plugin_where, unknownPluginMessage(instance, known)});
      continue;
    }
    auto [it, inserted] = schemas.try_emplace(instance.plugin);
    CompiledSchema& compiled = it->second;
    if (inserted) compiled.schema = JsonSchema::compile(info->config_schema, &compiled.error);
    const std::string label = "instance " + internal::quote(name) + " (" + instance.plugin.str() +
                              " from " + info->file + ")";
    if (!compiled.schema) {
      diagnostics.push_back(Diagnostic{
          instance.plugin_where, label + ": the plugin's config schema is invalid (a bug in " +
                                     info->file + "): " + compiled.error});
      continue;
    }
    const std::vector<SchemaViolation> violations = compiled.schema->validate(instance.config);
    if (violations.empty()) {
      instance.config = compiled.schema->withDefaults(instance.config);
      continue;
    }
    for (const SchemaViolation& v : violations) {
      const std::string path = v.instance_path.empty() ? "config" : v.instance_path;
      diagnostics.push_back(Diagnostic{
          locate(instance, v.instance_path),
          label + ": " + path + ": " + redactSecrets(v.message, v.instance_path, instance)});
    }
  }
  std::stable_sort(
      diagnostics.begin(), diagnostics.end(), [](const Diagnostic& a, const Diagnostic& b) {
        return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
      });
  return diagnostics;
}

}  // namespace kiln::config
