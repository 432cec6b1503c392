#include "kiln/http/server.h"

#include <algorithm>
#include <sstream>

#include <Poco/Exception.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/ThreadPool.h>
#include <Poco/URI.h>
#include <nlohmann/json.hpp>

namespace kiln::http {
namespace {

std::vector<std::string> splitPath(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream in(path);
  std::string seg;
  while (std::getline(in, seg, '/')) {
    if (!seg.empty()) out.push_back(seg);
  }
  return out;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

Response problem(int status, const std::string& type, const std::string& title,
                 const std::string& detail) {
  nlohmann::json body = {{"type", "https://kiln.dev/problems/" + type},
                         {"title", title},
                         {"status", status},
                         {"detail", detail}};
  return Response{status, "application/problem+json", body.dump(), {}};
}

Response jsonResponse(int status, const std::string& body) {
  return Response{status, "application/json", body, {}};
}

void Router::add(const std::string& method, const std::string& pattern, Handler handler) {
  routes_.push_back(Route{method, splitPath(pattern), std::move(handler)});
}

Response Router::dispatch(Request& request) const {
  const auto segments = splitPath(request.path);
  std::vector<std::string> allowed;
  for (const Route& r : routes_) {
    if (r.segments.size() != segments.size()) continue;
    std::map<std::string, std::string> params;
    bool match = true;
    for (size_t i = 0; i < segments.size() && match; ++i) {
      const std::string& s = r.segments[i];
      if (s.size() > 2 && s.front() == '{' && s.back() == '}') {
        params[s.substr(1, s.size() - 2)] = segments[i];
      } else {
        match = s == segments[i];
      }
    }
    if (!match) continue;
    if (r.method != request.method) {
      allowed.push_back(r.method);
      continue;
    }
    request.params = std::move(params);
    return r.handler(request);
  }
  if (!allowed.empty()) {
    std::string allow;
    for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
    Response r =
        problem(405, "method-not-allowed", "Method not allowed",
                request.method + " is not supported on " + request.path + "; use " + allow);
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  return problem(404, "not-found", "Not found", "no resource at " + request.path);
}

namespace {

class RoutedHandler : public Poco::Net::HTTPRequestHandler {
 public:
  RoutedHandler(std::shared_ptr<const Router> router, int64_t max_body)
      : router_(std::move(router)), max_body_(max_body) {}

  void handleRequest(Poco::Net::HTTPServerRequest& in,
                     Poco::Net::HTTPServerResponse& out) override {
    Response response;
    try {
      response = handle(in);
    } catch (const std::exception& e) {
      response = problem(500, "internal", "Internal server error", e.what());
    }
    out.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(response.status));
    out.setContentType(response.content_type);
    for (const auto& [k, v] : response.headers) out.set(k, v);
    out.setContentLength(static_cast<std::streamsize>(response.body.size()));
    if (response.status == 413) out.setKeepAlive(false);
    std::ostream& body = out.send();  // send() may be called only once
    body << response.body;
    body.flush();
    if (response.status == 413) drainRefusedBody(in);
  }

 private:
  Response handle(Poco::Net::HTTPServerRequest& in) {
    Request req;
    req.method = in.getMethod();
    Poco::URI uri(in.getURI());
    req.path = uri.getPath();
    for (const auto& [k, v] : uri.getQueryParameters()) req.query[k] = v;
    for (const auto& [k, v] : in) req.headers[lower(k)] = v;
    if (in.hasContentLength() && in.getContentLength64() > max_body_) {
      return problem(413, "body-too-large", "Request body too large",
                     "the body is " + std::to_string(in.getContentLength64()) +
                         " bytes; the limit is " + std::to_string(max_body_));
    }
    // Read at most one byte past the cap so a chunked body cannot grow unbounded.
    std::istream& body = in.stream();
    std::string data;
    char buf[8192];
    while (body.read(buf, sizeof buf) || body.gcount() > 0) {
      data.append(buf, static_cast<size_t>(body.gcount()));
      if (static_cast<int64_t>(data.size()) > max_body_) {
        return problem(413, "body-too-large", "Request body too large",
                       "the body exceeds the limit of " + std::to_string(max_body_) + " bytes");
      }
    }
    req.body = std::move(data);
    return router_->dispatch(req);
  }

  // Rationale: closing a socket with unread input makes the kernel send a
  // reset, which can destroy the 413 before the client reads it. Discard a
  // bounded amount (never stored) so the answer arrives; past the bound the
  // connection is closed anyway.
  static void drainRefusedBody(Poco::Net::HTTPServerRequest& in) {
    constexpr int64_t kMaxDrainBytes = 16 << 20;
    try {
      std::istream& body = in.stream();
      char buf[16384];
      int64_t drained = 0;
      while (drained < kMaxDrainBytes && (body.read(buf, sizeof buf) || body.gcount() > 0)) {
        drained += body.gcount();
      }
    } catch (const std::exception&) {
      // The client went away: nothing left to protect.
    }
  }

  std::shared_ptr<const Router> router_;
  int64_t max_body_;
};

class Factory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  Factory(std::shared_ptr<const Router> router, int64_t max_body)
      : router_(std::move(router)), max_body_(max_body) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new RoutedHandler(router_, max_body_);
  }

 private:
  std::shared_ptr<const Router> router_;
  int64_t max_body_;
};

}  // namespace

struct Server::Impl {
  ServerOptions options;
  std::shared_ptr<const Router> router;
  std::unique_ptr<Poco::ThreadPool> pool;
  std::unique_ptr<Poco::Net::HTTPServer> server;
  uint16_t port = 0;
};

Server::Server(ServerOptions options, std::shared_ptr<const Router> router)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->router = std::move(router);
}

Server::~Server() {
  stop();
}

Result<void> Server::start() {
  const auto& o = impl_->options;
  try {
    Poco::Net::SocketAddress address(o.host, o.port);
    // Rationale: Poco's ServerSocket(address) also sets SO_REUSEPORT, which
    // would let a second kiln share the port silently; refuse instead.
    Poco::Net::ServerSocket socket;
    socket.bind(address, /*reuseAddress=*/true, /*reusePort=*/false);
    socket.listen(64);
    impl_->port = socket.address().port();
    auto* params = new Poco::Net::HTTPServerParams();
    params->setMaxThreads(o.threads);
    params->setMaxQueued(256);
    // Rationale: Poco's default pool holds 16 threads shared process-wide;
    // the server gets its own so long requests cannot starve other users.
    impl_->pool = std::make_unique<Poco::ThreadPool>(2, std::max(2, o.threads));
    impl_->server = std::make_unique<Poco::Net::HTTPServer>(
        new Factory(impl_->router, o.max_body_bytes), *impl_->pool, socket, params);
    impl_->server->start();
  } catch (const Poco::Exception& e) {
    return makeError(ErrorCode::kUnavailable, "cannot listen on " + o.host + ":" +
                                                  std::to_string(o.port) + ": " + e.displayText());
  }
  return {};
}

uint16_t Server::port() const {
  return impl_->port;
}

void Server::stop() {
  if (impl_->server) {
    impl_->server->stopAll(false);
    impl_->server.reset();
    impl_->pool->joinAll();
  }
}

}  // namespace kiln::http
