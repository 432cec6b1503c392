// Test support: a real HTTP (or HTTPS) server on 127.0.0.1, port 0, whose
// requests go to a lambda. Poco's server threads call it concurrently.
#pragma once

#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>

#include <functional>
#include <memory>
#include <string>

namespace kiln::testing {

using HttpHandler =
    std::function<void(Poco::Net::HTTPServerRequest&, Poco::Net::HTTPServerResponse&)>;

class LocalHttpServer {
 public:
  explicit LocalHttpServer(HttpHandler handler)
      : LocalHttpServer(std::move(handler),
                        Poco::Net::ServerSocket(Poco::Net::SocketAddress("127.0.0.1", 0)), "http") {
  }

  // `socket` may be a Poco::Net::SecureServerSocket (scheme "https").
  LocalHttpServer(HttpHandler handler, const Poco::Net::ServerSocket& socket, std::string scheme)
      : port_(socket.address().port()), scheme_(std::move(scheme)) {
    auto* params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(8);
    server_ =
        std::make_unique<Poco::Net::HTTPServer>(new Factory(std::move(handler)), socket, params);
    server_->start();
  }
  ~LocalHttpServer() { server_->stopAll(true); }

  uint16_t port() const { return port_; }
  std::string url(const std::string& path, const std::string& host = "127.0.0.1") const {
    return scheme_ + "://" + host + ":" + std::to_string(port_) + path;
  }

 private:
  class Handler : public Poco::Net::HTTPRequestHandler {
   public:
    explicit Handler(const HttpHandler& fn) : fn_(fn) {}
    void handleRequest(Poco::Net::HTTPServerRequest& req,
                       Poco::Net::HTTPServerResponse& res) override {
      fn_(req, res);
    }

   private:
    const HttpHandler& fn_;
  };
  class Factory : public Poco::Net::HTTPRequestHandlerFactory {
   public:
    explicit Factory(HttpHandler fn) : fn_(std::move(fn)) {}
    Poco::Net::HTTPRequestHandler* createRequestHandler(
        const Poco::Net::HTTPServerRequest&) override {
      return new Handler(fn_);
    }

   private:
    HttpHandler fn_;
  };

  uint16_t port_;
  std::string scheme_;
  std::unique_ptr<Poco::Net::HTTPServer> server_;
};

}  // namespace kiln::testing
