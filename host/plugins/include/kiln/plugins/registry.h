// The plugin loader and registry: loads plugin libraries with Boost.DLL,
// negotiates the ABI, registers plugins by (kind, id) and creates instances.
//
// Lifetime: a PluginInstance holds a shared reference to its library, so a
// library is unloaded (deinit, dlclose) only after the registry and every
// instance created from it are gone.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/domain/plugin_kind.h"
#include "kiln/domain/result.h"

namespace kiln::config {
class JsonSchema;
}

namespace kiln::plugins {

class LoadedLibrary;

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Options of one call into a plugin. All callbacks may be invoked from any
// thread while the call runs and must be thread-safe.
struct CallOptions {
  std::string build_id;                // tags log lines; may be empty
  std::function<bool()> is_cancelled;  // empty: never cancelled
  // KILN_EVENT_* kind and its payload; empty: output/progress go to the log.
  std::function<void(int32_t kind, std::string_view payload)> on_event;
};

// What the host offers plugins through the kiln_host table. Services left
// empty answer KILN_ERR_UNAVAILABLE with a message saying so.
struct HostServices {
  using Handler = std::function<Result<std::string>(const std::string& request_json,
                                                    const CallOptions& options)>;
  Handler http_request;
  Handler run_process;
  std::map<std::string, std::string> secrets;
  // Receives every log line a plugin writes, already tagged; empty: stderr.
  std::function<void(LogLevel, const std::string& line)> log;
};

struct LoadError {
  std::string file;
  std::string message;
  std::string format() const { return file + ": " + message; }
};

// A registered plugin, as its library described it.
struct PluginInfo {
  domain::PluginRef ref;
  std::string kind_id;  // "kiln.code-agent/1"
  std::string name;
  std::string version;
  std::string description;
  std::string homepage;
  uint32_t flags = 0;
  nlohmann::json config_schema;
  std::string file;  // the library it came from
  std::string library_name;
  std::string library_version;
  uint32_t abi_major = 0;
  uint32_t abi_minor = 0;
};

// The functions of the five kind tables.
enum class Operation {
  kExecute,            // code agent
  kRender,             // template provider
  kList,               // template provider (optional)
  kCredentials,        // git host
  kCreateRepository,   // git host (optional)
  kOpenChangeRequest,  // git host (optional)
  kTrigger,            // CI trigger
  kStatus,             // CI trigger (optional)
  kNotify,             // notifier
};
const char* operationName(Operation op);
domain::PluginKind operationKind(Operation op);

// A live plugin instance. Thread-safe: calls are serialized only when the
// plugin asked for it (KILN_PLUGIN_FLAG_SERIALIZED).
class PluginInstance {
 public:
  ~PluginInstance();
  PluginInstance(const PluginInstance&) = delete;
  PluginInstance& operator=(const PluginInstance&) = delete;

  const std::string& name() const { return name_; }
  const PluginInfo& info() const { return *info_; }
  bool supports(Operation op) const;

  // Calls `op` with a request document and returns the result document.
  // Errors name the instance and plugin; a plugin that fails without a
  // message, or succeeds without a result, is reported as kPluginBug.
  Result<std::string> invoke(Operation op, const std::string& request_json,
                             const CallOptions& options = {}) const;

 private:
  friend class Registry;
  PluginInstance() = default;

  std::shared_ptr<LoadedLibrary> library_;
  std::shared_ptr<const PluginInfo> info_;
  const void* descriptor_ = nullptr;  // const kiln_plugin_descriptor* (host copy)
  void* handle_ = nullptr;            // plugin-owned instance
  std::string name_;
  mutable std::mutex serialize_mu_;
};

class Registry {
 public:
  explicit Registry(HostServices services = {});
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Loads every "*.so" regular file in `dir` in name order. Files that fail
  // are skipped and reported in `errors`; a missing directory is one error.
  void loadDirectory(const std::string& dir, std::vector<LoadError>* errors);

  // Loads one library and registers all its plugins, or none of them.
  Result<void> loadFile(const std::string& path);

  const PluginInfo* find(const domain::PluginRef& ref) const;
  std::vector<const PluginInfo*> list() const;  // sorted by kind, then id
  std::vector<domain::PluginRef> refs() const;

  // Validates `config` against the plugin's schema (defaults filled in),
  // then calls its create(). `instance_name` tags logs and errors.
  Result<std::shared_ptr<PluginInstance>> create(const domain::PluginRef& ref,
                                                 const std::string& instance_name,
                                                 const nlohmann::json& config) const;

 private:
  struct Entry {
    std::shared_ptr<const PluginInfo> info;
    std::shared_ptr<LoadedLibrary> library;
    const void* descriptor;                            // points into library
    std::shared_ptr<const config::JsonSchema> schema;  // compiled once, at load
  };

  std::shared_ptr<const HostServices> services_;
  std::map<domain::PluginRef, Entry> plugins_;
};

}  // namespace kiln::plugins
