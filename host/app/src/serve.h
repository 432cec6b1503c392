// `kiln serve`: boots the runtime, serves HTTP, shuts down on SIGTERM/SIGINT.
#pragma once

#include <optional>
#include <ostream>
#include <string>

namespace kiln::app {

struct ServeOptions {
  std::string config_path;
  std::optional<std::string> listen_override;  // "host:port"
};

int serve(const ServeOptions& options, std::ostream& out, std::ostream& err);

}  // namespace kiln::app
