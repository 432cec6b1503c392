// The five kinds of plugin, as the configuration and the CLI name them.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::domain {

enum class PluginKind { kCodeAgent, kTemplateProvider, kGitHost, kCiTrigger, kNotifier };

inline constexpr std::array<PluginKind, 5> kAllPluginKinds = {
    PluginKind::kCodeAgent, PluginKind::kTemplateProvider, PluginKind::kGitHost,
    PluginKind::kCiTrigger, PluginKind::kNotifier};

// "code-agent", "template-provider", "git-host", "ci-trigger", "notifier".
std::string_view pluginKindName(PluginKind kind);
std::optional<PluginKind> parsePluginKind(std::string_view name);

// A plugin is addressed as "<kind>/<id>", e.g. "notifier/webhook": ids are
// unique per kind only, so the same id may serve two kinds.
struct PluginRef {
  PluginKind kind = PluginKind::kCodeAgent;
  std::string id;

  std::string str() const { return std::string(pluginKindName(kind)) + "/" + id; }
  friend bool operator==(const PluginRef&, const PluginRef&) = default;
  friend auto operator<=>(const PluginRef&, const PluginRef&) = default;
};

// Parses "<kind>/<id>"; nullopt with *error set when malformed.
std::optional<PluginRef> parsePluginRef(std::string_view text, std::string* error);

}  // namespace kiln::domain
