#include "kiln/domain/plugin_kind.h"

namespace kiln::domain {

std::string_view pluginKindName(PluginKind kind) {
  switch (kind) {
    case PluginKind::kCodeAgent: return "code-agent";
    case PluginKind::kTemplateProvider: return "template-provider";
    case PluginKind::kGitHost: return "git-host";
    case PluginKind::kCiTrigger: return "ci-trigger";
    case PluginKind::kNotifier: return "notifier";
  }
  return "unknown";
}

std::optional<PluginKind> parsePluginKind(std::string_view name) {
  for (PluginKind k : kAllPluginKinds) {
    if (pluginKindName(k) == name) return k;
  }
  return std::nullopt;
}

std::optional<PluginRef> parsePluginRef(std::string_view text, std::string* error) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size()) {
    *error = "expected \"<kind>/<id>\" such as \"code-agent/command\", got \"" + std::string(text) +
             "\"";
    return std::nullopt;
  }
  const auto kind = parsePluginKind(text.substr(0, slash));
  if (!kind) {
    *error = "unknown plugin kind \"" + std::string(text.substr(0, slash)) +
             "\" (kinds: code-agent, template-provider, git-host, ci-trigger, notifier)";
    return std::nullopt;
  }
  return PluginRef{*kind, std::string(text.substr(slash + 1))};
}

}  // namespace kiln::domain
