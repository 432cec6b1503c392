// Kiln's HTTP server: a small router over Poco's HTTPServer. Handlers see
// plain Request/Response values, so they are testable without sockets.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/domain/result.h"

namespace kiln::http {

struct Request {
  std::string method;
  std::string path;  // decoded, without the query
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> params;   // from "{name}" route segments
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// RFC 9457 problem details. `type` is a stable slug, expanded to
// "https://kiln.dev/problems/<slug>".
Response problem(int status, const std::string& type, const std::string& title,
                 const std::string& detail);
Response jsonResponse(int status, const std::string& body);

using Handler = std::function<Response(const Request&)>;

class Router {
 public:
  // pattern: "/builds/{task_id}"; a segment in braces matches one segment.
  void add(const std::string& method, const std::string& pattern, Handler handler);
  // 404 for an unknown path, 405 (with Allow) for a known path and another method.
  Response dispatch(Request& request) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
  };
  std::vector<Route> routes_;
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  // 0: any free port
  int64_t max_body_bytes = 1 << 20;
  int threads = 16;
};

class Server {
 public:
  Server(ServerOptions options, std::shared_ptr<const Router> router);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  Result<void> start();
  uint16_t port() const;  // the bound port, after start()
  // Stops accepting and waits for requests in flight.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::http
