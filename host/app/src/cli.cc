#include "cli.h"

#include <algorithm>
#include <functional>
#include <iomanip>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "kiln/plugin.h"
#include "kiln/store/open.h"
#include "runtime.h"
#include "serve.h"

namespace kiln::app {
namespace {

const char kMainHelp[] = R"(kiln - build orchestration for bot-driven development

Usage: kiln <command> [options]

Commands:
  serve           Run the HTTP API and the workers
  migrate         Apply pending database migrations and exit
  config check    Validate a configuration file, its plugins and their configs
  plugins list    List the plugins kiln can load
  version         Print kiln's version and plugin ABI version

Options:
  -h, --help      Show help (also after any command: kiln serve --help)
  -V, --version   Same as `kiln version`

Configuration is YAML; examples/ shows a quick-start and a production config.
)";

const char kServeHelp[] = R"(Usage: kiln serve --config FILE [--listen HOST:PORT]

Loads the configuration and its plugins, creates every plugin instance and
serves the HTTP API until SIGTERM or SIGINT, then shuts down cleanly (exit 0).

Options:
  -c, --config FILE     Configuration file (required)
  -l, --listen H:P      Override server.listen (port 0 picks a free port)
  -h, --help            Show this help

Endpoints: GET /healthz, GET /version, and the build API:
  POST /projects/{id}/builds (alias POST /project/{name}/build), GET /projects/{id}/builds,
  GET /builds/{task_id}, POST /builds/{task_id}/cancel, POST /builds/{task_id}/retry,
  POST /projects, GET /projects, GET /projects/{id}, POST /project/create-and-build
)";

const char kMigrateHelp[] = R"(Usage: kiln migrate --config FILE

Applies the pending schema migrations of the configured store (SQLite file
or PostgreSQL database) and exits. `kiln serve` also applies them at start;
run this first when several kiln processes share one PostgreSQL database.

Options:
  -c, --config FILE     Configuration file (required)
)";

const char kConfigHelp[] = R"(Usage: kiln config check FILE

Validates FILE: YAML syntax, every key and value, references between projects
and plugin instances, each instance's config against its plugin's JSON Schema,
and that every instance can be created. Prints each problem as
file:line:column: message and exits 1 if there is any, 0 otherwise.
)";

const char kPluginsHelp[] =
    R"(Usage: kiln plugins list [--config FILE] [--plugin-dir DIR]... [--json]

Lists every loadable plugin: kind, id, version, ABI version and library file.
Without --config, lists the bundled plugins plus any --plugin-dir folders;
with --config, the folders that configuration names. Libraries that fail to
load are reported with the reason, and the exit code is then 1.

Options:
  -c, --config FILE      Use the plugin folders of this configuration
  -d, --plugin-dir DIR   Also load plugins from DIR (repeatable)
      --json             Machine-readable output
)";

std::string versionLine() {
  return std::string("kiln ") + KILN_VERSION + " (plugin ABI " +
         std::to_string(KILN_ABI_VERSION_MAJOR) + "." + std::to_string(KILN_ABI_VERSION_MINOR) +
         ")";
}

bool isHelp(const std::string& a) {
  return a == "-h" || a == "--help" || a == "help";
}

// A tiny option parser: --name VALUE, --name=VALUE, short aliases, flags.
struct Options {
  std::map<std::string, std::vector<std::string>> values;
  std::vector<std::string> positional;
  bool help = false;
};

std::optional<Options> parseOptions(const std::vector<std::string>& args, size_t from,
                                    const std::map<std::string, std::string>& aliases,
                                    const std::vector<std::string>& with_value,
                                    const std::vector<std::string>& flags, std::ostream& err,
                                    const std::string& command) {
  Options o;
  for (size_t i = from; i < args.size(); ++i) {
    std::string a = args[i];
    if (isHelp(a)) {
      o.help = true;
      continue;
    }
    if (a.size() < 2 || a[0] != '-') {
      o.positional.push_back(a);
      continue;
    }
    std::optional<std::string> inline_value;
    if (const auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
      inline_value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    if (const auto it = aliases.find(a); it != aliases.end()) a = it->second;
    const std::string name = a.rfind("--", 0) == 0 ? a.substr(2) : a;
    if (std::find(flags.begin(), flags.end(), name) != flags.end()) {
      o.values[name].push_back("true");
    } else if (std::find(with_value.begin(), with_value.end(), name) != with_value.end()) {
      if (inline_value) {
        o.values[name].push_back(*inline_value);
      } else if (i + 1 < args.size()) {
        o.values[name].push_back(args[++i]);
      } else {
        err << "kiln " << command << ": option --" << name << " needs a value\n";
        return std::nullopt;
      }
    } else {
      err << "kiln " << command << ": unknown option " << args[i] << " (see kiln " << command
          << " --help)\n";
      return std::nullopt;
    }
  }
  return o;
}

int configCheck(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto o = parseOptions(args, 2, {{"-c", "--config"}}, {"config"}, {}, err, "config check");
  if (!o) return 2;
  if (o->help) {
    out << kConfigHelp;
    return 0;
  }
  std::vector<std::string> files = o->positional;
  for (const auto& c : o->values["config"]) files.push_back(c);
  if (files.size() != 1) {
    err << "kiln config check: expected exactly one configuration file\n\n" << kConfigHelp;
    return 2;
  }
  auto booted = boot(files[0], /*create_instances=*/true);
  for (const auto& e : booted.errors) err << e << "\n";
  if (!booted.runtime) {
    err << files[0] << ": " << booted.errors.size() << " error"
        << (booted.errors.size() == 1 ? "" : "s") << "\n";
    return 1;
  }
  const auto& c = booted.runtime->config;
  out << files[0] << ": OK (" << c.instances.size() << " plugin instance"
      << (c.instances.size() == 1 ? "" : "s") << ", " << c.projects.size() << " project"
      << (c.projects.size() == 1 ? "" : "s") << ")\n";
  return 0;
}

int pluginsList(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto o = parseOptions(args, 2, {{"-c", "--config"}, {"-d", "--plugin-dir"}},
                        {"config", "plugin-dir"}, {"json"}, err, "plugins list");
  if (!o) return 2;
  if (o->help) {
    out << kPluginsHelp;
    return 0;
  }
  if (!o->positional.empty()) {
    err << "kiln plugins list: unexpected argument " << o->positional[0] << "\n";
    return 2;
  }
  std::vector<std::string> dirs;
  std::vector<std::string> errors;
  if (!o->values["config"].empty()) {
    const std::string& path = o->values["config"].front();
    auto loaded = config::loadConfig(path, configEnvironment(installLayout(), path));
    for (const auto& d : loaded.diagnostics) err << d.format() << "\n";
    if (!loaded.config) return 1;
    if (loaded.config->plugins.bundled) dirs.push_back(installLayout().plugin_dir);
    for (const auto& d : loaded.config->plugins.directories) dirs.push_back(d);
  } else {
    dirs.push_back(installLayout().plugin_dir);
  }
  for (const auto& d : o->values["plugin-dir"]) dirs.push_back(d);
  auto registry = loadPlugins(dirs, &errors);
  const auto plugins = registry->list();

  if (!o->values["json"].empty()) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto* p : plugins) {
      list.push_back({{"kind", domain::pluginKindName(p->ref.kind)},
                      {"id", p->ref.id},
                      {"name", p->name},
                      {"version", p->version},
                      {"description", p->description},
                      {"abi", std::to_string(p->abi_major) + "." + std::to_string(p->abi_minor)},
                      {"file", p->file},
                      {"config_schema", p->config_schema}});
    }
    out << nlohmann::json{{"plugins", list}, {"errors", errors}}.dump(2) << "\n";
  } else {
    size_t w_kind = 4, w_id = 2, w_ver = 7;
    for (const auto* p : plugins) {
      w_kind = std::max(w_kind, domain::pluginKindName(p->ref.kind).size());
      w_id = std::max(w_id, p->ref.id.size());
      w_ver = std::max(w_ver, p->version.size());
    }
    out << std::left << std::setw(static_cast<int>(w_kind) + 2) << "KIND"
        << std::setw(static_cast<int>(w_id) + 2) << "ID" << std::setw(static_cast<int>(w_ver) + 2)
        << "VERSION" << std::setw(5) << "ABI"
        << "FILE\n";
    for (const auto* p : plugins) {
      out << std::left << std::setw(static_cast<int>(w_kind) + 2)
          << domain::pluginKindName(p->ref.kind) << std::setw(static_cast<int>(w_id) + 2)
          << p->ref.id << std::setw(static_cast<int>(w_ver) + 2) << p->version << std::setw(5)
          << (std::to_string(p->abi_major) + "." + std::to_string(p->abi_minor)) << p->file << "\n";
    }
  }
  for (const auto& e : errors) err << "error: " << e << "\n";
  return errors.empty() ? 0 : 1;
}

int serveCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto o = parseOptions(args, 1, {{"-c", "--config"}, {"-l", "--listen"}}, {"config", "listen"}, {},
                        err, "serve");
  if (!o) return 2;
  if (o->help) {
    out << kServeHelp;
    return 0;
  }
  if (o->values["config"].empty() || !o->positional.empty()) {
    err << "kiln serve: --config FILE is required\n\n" << kServeHelp;
    return 2;
  }
  ServeOptions so;
  so.config_path = o->values["config"].front();
  if (!o->values["listen"].empty()) so.listen_override = o->values["listen"].front();
  return serve(so, out, err);
}

int migrateCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto o = parseOptions(args, 1, {{"-c", "--config"}}, {"config"}, {}, err, "migrate");
  if (!o) return 2;
  if (o->help) {
    out << kMigrateHelp;
    return 0;
  }
  if (o->values["config"].empty() || !o->positional.empty()) {
    err << "kiln migrate: --config FILE is required\n\n" << kMigrateHelp;
    return 2;
  }
  const std::string& path = o->values["config"].front();
  auto loaded = config::loadConfig(path, configEnvironment(installLayout(), path));
  for (const auto& d : loaded.diagnostics) err << d.format() << "\n";
  if (!loaded.config) return 1;
  const auto& store = loaded.config->store;
  auto report = store.kind == config::StoreConfig::Kind::kPostgres
                    ? store::migratePostgres(store::PostgresOptions{store.postgres_url, 1})
                    : store::migrateSqlite(store::SqliteOptions{store.sqlite_path, 5000});
  if (!report.ok()) {
    err << "kiln migrate: " << report.error().message << "\n";
    return 1;
  }
  out << "kiln migrate: applied " << report->applied << " migration"
      << (report->applied == 1 ? "" : "s") << "; schema version " << report->version << "\n";
  return 0;
}

}  // namespace

int runCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty()) {
    err << kMainHelp;
    return 2;
  }
  const std::string& cmd = args[0];
  if (isHelp(cmd)) {
    out << kMainHelp;
    return 0;
  }
  if (cmd == "-V" || cmd == "--version" || cmd == "version") {
    out << versionLine() << "\n";
    return 0;
  }
  if (cmd == "serve") return serveCommand(args, out, err);
  if (cmd == "migrate") return migrateCommand(args, out, err);
  if (cmd == "config" || cmd == "plugins") {
    const std::string sub = args.size() > 1 ? args[1] : "";
    const std::string expected = cmd == "config" ? "check" : "list";
    if (sub.empty() || isHelp(sub)) {
      (sub.empty() ? err : out) << (cmd == "config" ? kConfigHelp : kPluginsHelp);
      return sub.empty() ? 2 : 0;
    }
    if (sub != expected) {
      err << "kiln " << cmd << ": unknown subcommand \"" << sub << "\" (did you mean \"kiln " << cmd
          << " " << expected << "\"?)\n";
      return 2;
    }
    return cmd == "config" ? configCheck(args, out, err) : pluginsList(args, out, err);
  }
  err << "kiln: unknown command \"" << cmd << "\"\n\n" << kMainHelp;
  return 2;
}

}  // namespace kiln::app
