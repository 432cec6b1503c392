// Host side of the C ABI: the kiln_call a plugin sees during one call, the
// per-library kiln_host table, and the loaded-library handle.
#pragma once

#include <boost/dll/shared_library.hpp>

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/plugin.h"
#include "kiln/plugins/registry.h"

namespace kiln::plugins {

// A loaded library. Destroyed last of everything created from it: calls
// deinit() and then unloads.
class LoadedLibrary {
 public:
  LoadedLibrary(std::string path, boost::dll::shared_library lib,
                std::shared_ptr<const HostServices> services);
  ~LoadedLibrary();

  const std::string& path() const { return path_; }
  const kiln_host* host() const { return &host_; }
  const HostServices& services() const { return *services_; }
  void log(LogLevel level, const std::string& line) const;

  // Host copies of the plugin's structs, zero-filled past the plugin's
  // struct_size so that absent members read as NULL.
  kiln_library_entry entry{};
  std::deque<kiln_plugin_descriptor> descriptors;
  std::deque<std::vector<unsigned char>> tables;  // kind tables, host-sized
  bool initialized = false;

 private:
  std::string path_;
  boost::dll::shared_library lib_;  // declared before host_: outlives the table users
  std::shared_ptr<const HostServices> services_;
  kiln_host host_{};
};

}  // namespace kiln::plugins

// The opaque call handle of plugin.h, defined by the host.
struct kiln_call {
  const kiln::plugins::LoadedLibrary* library = nullptr;
  const std::string* instance_name = nullptr;  // NULL during create() of an unnamed instance
  const kiln::plugins::CallOptions* options = nullptr;
  const kiln::plugins::PluginInfo* plugin = nullptr;

  std::optional<std::string> result;
  std::string invalid_result;  // why set_result refused the document, if it did
  bool error_set = false;
  kiln_status error_code = KILN_OK;
  bool error_retryable = false;
  std::string error_message;
  std::deque<std::string> arena;  // strings handed to the plugin, valid until the call ends
};

namespace kiln::plugins {

// Fills `host` with the host functions; host_data points at `library`.
void fillHostTable(kiln_host* host, const LoadedLibrary* library);

// "instance \"x\" (notifier/webhook from /p/lib.so)" or "plugin notifier/webhook (/p/lib.so)".
std::string describeCallee(const kiln_call& call);

}  // namespace kiln::plugins
