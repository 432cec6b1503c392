#include "serve.h"

#include <signal.h>

#include <chrono>
#include <cstring>

#include <nlohmann/json.hpp>

#include "kiln/http/server.h"
#include "kiln/plugin.h"
#include "runtime.h"

namespace kiln::app {
namespace {

// Splits "host:port" / "[v6]:port"; false when malformed.
bool parseListen(const std::string& text, std::string* host, uint16_t* port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) return false;
  std::string h = text.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  try {
    size_t used = 0;
    const int p = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1 || p < 0 || p > 65535) return false;
    *port = static_cast<uint16_t>(p);
  } catch (const std::exception&) {
    return false;
  }
  *host = h.empty() ? "0.0.0.0" : h;
  return true;
}

std::shared_ptr<http::Router> makeRouter(const Runtime& rt) {
  auto router = std::make_shared<http::Router>();
  router->add("GET", "/healthz",
              [](const http::Request&) { return http::json(200, R"({"status":"ok"})"); });
  const nlohmann::json version = {{"name", "kiln"},
                                  {"version", KILN_VERSION},
                                  {"plugin_abi", std::to_string(KILN_ABI_VERSION_MAJOR) + "." +
                                                     std::to_string(KILN_ABI_VERSION_MINOR)},
                                  {"plugins", rt.registry->list().size()}};
  router->add("GET", "/version",
              [body = version.dump()](const http::Request&) { return http::json(200, body); });
  return router;
}

}  // namespace

int serve(const ServeOptions& options, std::ostream& out, std::ostream& err) {
  // Block the termination signals before any thread starts so that every
  // thread inherits the mask and only sigwait() below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto booted = boot(options.config_path, /*create_instances=*/true);
  for (const auto& e : booted.errors) err << e << "\n";
  if (!booted.runtime) {
    err << "kiln serve: not starting: the configuration has errors\n";
    return 1;
  }
  Runtime& rt = *booted.runtime;

  http::ServerOptions so;
  so.host = rt.config.server.listen_host;
  so.port = rt.config.server.listen_port;
  so.max_body_bytes = rt.config.server.max_body_bytes;
  if (options.listen_override && !parseListen(*options.listen_override, &so.host, &so.port)) {
    err << "kiln serve: --listen must be HOST:PORT, got \"" << *options.listen_override << "\"\n";
    return 2;
  }
  http::Server server(so, makeRouter(rt));
  if (auto started = server.start(); !started.ok()) {
    err << "kiln serve: " << started.error().message << "\n";
    return 1;
  }
  const std::string shown_host =
      so.host.find(':') != std::string::npos ? "[" + so.host + "]" : so.host;
  out << "kiln " << KILN_VERSION << ": listening on http://" << shown_host << ":" << server.port()
      << " (" << rt.instances.size() << " plugin instance" << (rt.instances.size() == 1 ? "" : "s")
      << ", " << rt.config.projects.size() << " project"
      << (rt.config.projects.size() == 1 ? "" : "s") << ")" << std::endl;

  int received = 0;
  sigwait(&signals, &received);
  out << "kiln: received " << (received == SIGTERM ? "SIGTERM" : "SIGINT") << ", shutting down"
      << std::endl;
  const auto t0 = std::chrono::steady_clock::now();
  server.stop();
  rt.instances.clear();  // destroy instances before their libraries unload
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  out << "kiln: stopped in " << ms << " ms" << std::endl;
  return 0;
}

}  // namespace kiln::app
