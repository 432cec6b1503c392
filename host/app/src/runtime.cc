#include "runtime.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "host_services.h"
#include "kiln/store/open.h"

namespace kiln::app {
namespace fs = std::filesystem;

InstallLayout installLayout() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  const fs::path bin = ec ? fs::current_path() : exe.parent_path();
  return InstallLayout{(bin / KILN_PLUGIN_DIR_FROM_BIN).lexically_normal().string(),
                       (bin / KILN_TEMPLATE_DIR_FROM_BIN).lexically_normal().string(),
                       (bin / KILN_AGENT_DIR_FROM_BIN).lexically_normal().string()};
}

config::EnvLookup configEnvironment(const InstallLayout& layout, const std::string& config_path) {
  std::error_code ec;
  const std::string config_dir =
      fs::absolute(config_path, ec).parent_path().lexically_normal().string();
  return [layout, config_dir](const std::string& name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name.c_str())) return std::string(v);
    if (name == "KILN_PLUGIN_DIR") return layout.plugin_dir;
    if (name == "KILN_TEMPLATE_DIR") return layout.template_dir;
    if (name == "KILN_AGENT_DIR") return layout.agent_dir;
    if (name == "KILN_CONFIG_DIR") return config_dir;
    return std::nullopt;
  };
}

namespace {

std::unique_ptr<plugins::Registry> loadWith(const std::vector<std::string>& dirs,
                                            std::vector<std::string>* errors,
                                            plugins::HostServices services) {
  auto registry = std::make_unique<plugins::Registry>(std::move(services));
  std::vector<plugins::LoadError> load_errors;
  for (const auto& d : dirs) registry->loadDirectory(d, &load_errors);
  for (const auto& e : load_errors) errors->push_back(e.format());
  return registry;
}

}  // namespace

std::unique_ptr<plugins::Registry> loadPlugins(const std::vector<std::string>& dirs,
                                               std::vector<std::string>* errors) {
  return loadWith(dirs, errors, {});
}

BootResult boot(const std::string& config_path, bool create_instances) {
  BootResult out;
  const InstallLayout layout = installLayout();
  auto loaded = config::loadConfig(config_path, configEnvironment(layout, config_path));
  std::vector<config::Diagnostic> diagnostics = std::move(loaded.diagnostics);
  if (!loaded.config && !loaded.partial) {
    for (const auto& d : diagnostics) out.errors.push_back(d.format());
    return out;
  }
  const bool structurally_valid = loaded.config.has_value();
  Runtime rt;
  rt.config = std::move(structurally_valid ? *loaded.config : *loaded.partial);

  std::vector<std::string> dirs;
  if (rt.config.plugins.bundled) dirs.push_back(layout.plugin_dir);
  for (const auto& d : rt.config.plugins.directories) dirs.push_back(d);
  rt.registry = loadWith(dirs, &out.errors, makeHostServices(rt.config));

  std::map<domain::PluginRef, config::PluginSchemaInfo> schemas;
  for (const auto* info : rt.registry->list()) {
    schemas[info->ref] = config::PluginSchemaInfo{info->file, info->config_schema};
  }
  const auto plugin_diagnostics = config::validatePluginConfigs(
      rt.config,
      [&](const domain::PluginRef& ref) -> const config::PluginSchemaInfo* {
        const auto it = schemas.find(ref);
        return it == schemas.end() ? nullptr : &it->second;
      },
      rt.registry->refs());
  diagnostics.insert(diagnostics.end(), plugin_diagnostics.begin(), plugin_diagnostics.end());
  std::stable_sort(diagnostics.begin(), diagnostics.end(), [](const auto& a, const auto& b) {
    return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
  });
  // Plugin load errors come first: they explain any "no plugin" below.
  for (const auto& d : diagnostics) out.errors.push_back(d.format());
  if (!out.errors.empty()) return out;

  if (create_instances) {
    for (const auto& [name, inst] : rt.config.instances) {
      auto created = rt.registry->create(inst.plugin, name, inst.config);
      if (!created.ok()) {
        out.errors.push_back(config::Diagnostic{inst.where, created.error().message}.format());
        continue;
      }
      rt.instances[name] = std::move(created).value();
    }
  }
  if (out.errors.empty()) out.runtime = std::move(rt);
  return out;
}

Result<std::unique_ptr<ports::Store>> openStore(const config::StoreConfig& store) {
  if (store.kind == config::StoreConfig::Kind::kPostgres) {
    return store::openPostgresStore(store::PostgresOptions{store.postgres_url, 8});
  }
  return store::openSqliteStore(store::SqliteOptions{store.sqlite_path, 5000});
}

Result<void> syncConfiguredProjects(const config::Config& config, ports::Store& store) {
  for (const auto& [id, pc] : config.projects) {
    domain::Project p;
    p.id = id;
    p.repo_url = pc.repo_url;
    p.default_branch = pc.default_branch;
    p.source = "config";
    p.max_running_builds = pc.max_running_builds;
    p.max_pending_builds = pc.max_pending_builds;
    p.max_timeout_s = pc.max_timeout_s;
    p.created_at = domain::nowMs();
    if (auto r = store.upsertProject(p); !r.ok()) {
      return makeError(r.error().code,
                       "cannot record configured project \"" + id + "\": " + r.error().message);
    }
  }
  return {};
}

}  // namespace kiln::app
