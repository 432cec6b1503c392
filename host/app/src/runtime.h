// The composition root's shared start-up: configuration, plugin registry
// and plugin instances, as `serve`, `config check` and `plugins list` need.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/config/config.h"
#include "kiln/plugins/registry.h"
#include "kiln/ports/store.h"

namespace kiln::app {

// Where the running kiln binary keeps its bundled files (bin/../lib/kiln/plugins,
// bin/../share/kiln/templates, bin/../share/kiln/agents), in the build tree
// and once installed alike.
struct InstallLayout {
  std::string plugin_dir;
  std::string template_dir;
  std::string agent_dir;  // bundled agent programs (the demo agent)
};
InstallLayout installLayout();

// The environment the configuration sees: the process environment plus,
// unless set there, KILN_PLUGIN_DIR, KILN_TEMPLATE_DIR and KILN_AGENT_DIR (the
// bundled folders) and KILN_CONFIG_DIR (the folder of `config_path`), so that plugin
// configs can name paths relative to the file, which kiln cannot do for them.
config::EnvLookup configEnvironment(const InstallLayout& layout, const std::string& config_path);

struct Runtime {
  config::Config config;
  std::unique_ptr<plugins::Registry> registry;
  std::map<std::string, std::shared_ptr<plugins::PluginInstance>> instances;
};

struct BootResult {
  std::optional<Runtime> runtime;   // set when there were no errors
  std::vector<std::string> errors;  // formatted, one per problem
};

// Loads the config, the plugins it asks for, validates every instance
// config and (when create_instances) creates every instance.
BootResult boot(const std::string& config_path, bool create_instances);

// Loads plugins only (for `kiln plugins list` without a config).
std::unique_ptr<plugins::Registry> loadPlugins(const std::vector<std::string>& dirs,
                                               std::vector<std::string>* errors);

// Opens (and migrates) the configured store.
Result<std::unique_ptr<ports::Store>> openStore(const config::StoreConfig& store);

// Makes the store's copy of every project of the configuration current.
Result<void> syncConfiguredProjects(const config::Config& config, ports::Store& store);

}  // namespace kiln::app
