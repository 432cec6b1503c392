// kiln::http::sendRequest against real local servers: HTTP on port 0, and
// HTTPS with certificates made for the test (one the client trusts through
// SSL_CERT_FILE, which OpenSSL's default verify paths honour, one it does not).
#include "kiln/http/client.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/StreamCopier.h>
#include <Poco/String.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "local_http_server.h"

namespace {

namespace fs = std::filesystem;
using kiln::ErrorCode;
using kiln::http::ClientRequest;
using kiln::http::ClientResponse;
using kiln::http::sendRequest;
using kiln::testing::LocalHttpServer;
using Poco::Net::HTTPServerRequest;
using Poco::Net::HTTPServerResponse;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

// Certificates for the HTTPS tests, made once per test process before the
// client's TLS context exists (it reads SSL_CERT_FILE when it is created).
class Certificates : public ::testing::Environment {
 public:
  static inline fs::path dir;
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "kiln-tls-XXXXXX").string();
    dir = ::mkdtemp(pattern.data());
    for (const std::string name : {"trusted", "untrusted"}) {
      const std::string cmd =
          "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
          "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
          (dir / (name + ".key")).string() + " -out " + (dir / (name + ".crt")).string() +
          " 2>/dev/null";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    ::setenv("SSL_CERT_FILE", (dir / "trusted.crt").c_str(), 1);
  }
  void TearDown() override { fs::remove_all(dir); }
};
const auto* const kCertificates = ::testing::AddGlobalTestEnvironment(new Certificates);

std::unique_ptr<LocalHttpServer> httpsServer(const std::string& cert,
                                             kiln::testing::HttpHandler handler) {
  Poco::Net::Context::Ptr ctx = new Poco::Net::Context(
      Poco::Net::Context::TLS_SERVER_USE, (Certificates::dir / (cert + ".key")).string(),
      (Certificates::dir / (cert + ".crt")).string(), "", Poco::Net::Context::VERIFY_NONE);
  Poco::Net::SecureServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0), 64, ctx);
  return std::make_unique<LocalHttpServer>(std::move(handler), socket, "https");
}

// Answers by path; echoes what it received.
void routes(HTTPServerRequest& req, HTTPServerResponse& res) {
  std::string body;
  Poco::StreamCopier::copyToString(req.stream(), body);
  const std::string path = req.getURI();
  if (path.rfind("/redirect-to?", 0) == 0) {
    res.setStatus(HTTPServerResponse::HTTP_FOUND);
    res.set("Location", path.substr(std::string("/redirect-to?").size()));
    res.send();
    return;
  }
  if (path == "/see-other") {
    res.setStatus(HTTPServerResponse::HTTP_SEE_OTHER);
    res.set("Location", "/echo");
    res.send();
    return;
  }
  if (path == "/loop") {
    res.setStatus(HTTPServerResponse::HTTP_FOUND);
    res.set("Location", "/loop");
    res.send();
    return;
  }
  if (path == "/slow") {
    std::this_thread::sleep_for(1500ms);
  }
  if (path == "/missing") res.setStatus(HTTPServerResponse::HTTP_NOT_FOUND);
  if (path == "/big") {
    res.send() << std::string(200000, 'b');
    return;
  }
  res.set("X-Reply", "yes");
  res.setContentType("text/plain");
  res.send() << req.getMethod() << " " << path << " auth=" << req.get("Authorization", "-")
             << " test=" << req.get("X-Test", "-") << " body=" << body;
}

std::string header(const ClientResponse& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (Poco::icompare(k, name) == 0) return v;
  }
  return "";
}

ClientResponse mustSend(const ClientRequest& req) {
  auto r = sendRequest(req);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : ClientResponse{};
}

TEST(HttpClientTest, GetAnswersStatusHeadersAndBody) {
  LocalHttpServer server(routes);
  ClientRequest req;
  req.url = server.url("/hello?x=1");
  const ClientResponse r = mustSend(req);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(header(r, "X-Reply"), "yes");
  EXPECT_EQ(r.body, "GET /hello?x=1 auth=- test=- body=");
}

TEST(HttpClientTest, SendsMethodHeadersAndBody) {
  LocalHttpServer server(routes);
  ClientRequest req;
  req.method = "POST";
  req.url = server.url("/echo");
  req.headers = {{"X-Test", "42"}, {"Content-Type", "application/json"}};
  req.body = R"({"a":1})";
  EXPECT_EQ(mustSend(req).body, R"(POST /echo auth=- test=42 body={"a":1})");
}

TEST(HttpClientTest, AnyStatusIsAResponse) {
  LocalHttpServer server(routes);
  ClientRequest req;
  req.url = server.url("/missing");
  EXPECT_EQ(mustSend(req).status, 404);
}

TEST(HttpClientTest, RedirectsAreFollowedOnlyWhenAsked) {
  LocalHttpServer server(routes);
  ClientRequest req;
  req.url = server.url("/redirect-to?/target");
  ClientResponse r = mustSend(req);
  EXPECT_EQ(r.status, 302);
  EXPECT_EQ(header(r, "Location"), "/target");

  req.follow_redirects = true;
  r = mustSend(req);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "GET /target auth=- test=- body=");

  // 303 turns a POST into a GET without the body.
  req.method = "POST";
  req.body = "payload";
  req.url = server.url("/see-other");
  EXPECT_EQ(mustSend(req).body, "GET /echo auth=- test=- body=");

  req.method = "GET";
  req.url = server.url("/loop");
  auto looped = sendRequest(req);
  ASSERT_FALSE(looped.ok());
  EXPECT_EQ(looped.error().code, ErrorCode::kUnavailable);
  EXPECT_THAT(looped.error().message, HasSubstr("more than 5 redirects"));
}

TEST(HttpClientTest, CredentialsDoNotFollowARedirectToAnotherOrigin) {
  LocalHttpServer other(routes);
  LocalHttpServer first(routes);
  ClientRequest req;
  req.follow_redirects = true;
  req.headers = {{"Authorization", "Bearer t0ken"}};
  req.url = first.url("/redirect-to?/same");
  EXPECT_EQ(mustSend(req).body, "GET /same auth=Bearer t0ken test=- body=");
  req.url = first.url("/redirect-to?" + other.url("/elsewhere"));
  EXPECT_EQ(mustSend(req).body, "GET /elsewhere auth=- test=- body=");
}

TEST(HttpClientTest, TimeoutIsATimeoutError) {
  LocalHttpServer server(routes);
  ClientRequest req;
  req.url = server.url("/slow");
  req.timeout = 300ms;
  const auto start = std::chrono::steady_clock::now();
  auto r = sendRequest(req);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1200ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout);
  EXPECT_THAT(r.error().message, HasSubstr("timed out after 300 ms"));
}

TEST(HttpClientTest, ARefusedConnectionIsUnavailableAndRetryable) {
  uint16_t port;
  {
    Poco::Net::ServerSocket s(Poco::Net::SocketAddress("127.0.0.1", 0));
    port = s.address().port();
  }
  ClientRequest req;
  req.url = "http://127.0.0.1:" + std::to_string(port) + "/hook?token=s3cret-in-query";
  auto r = sendRequest(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_TRUE(r.error().retryable);
  EXPECT_THAT(r.error().message, HasSubstr("127.0.0.1:" + std::to_string(port) + "/hook"));
  EXPECT_THAT(r.error().message, Not(HasSubstr("s3cret"))) << "query strings stay out of errors";
}

TEST(HttpClientTest, BadRequestsAreInvalidArguments) {
  ClientRequest req;
  req.url = "ftp://example.com/x";
  auto r = sendRequest(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(r.error().message, HasSubstr("unsupported URL scheme \"ftp\""));

  req.url = "http://example.com/";
  req.method = "GET X";
  r = sendRequest(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);

  req.method = "GET";
  req.url = "not a url";
  r = sendRequest(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
}

TEST(HttpClientTest, AResponseLargerThanTheLimitIsRefused) {
  LocalHttpServer server(routes);
  ClientRequest req;
  req.url = server.url("/big");
  req.max_response_bytes = 100000;
  auto r = sendRequest(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  req.max_response_bytes = 300000;
  EXPECT_EQ(mustSend(req).body.size(), 200000u);
}

TEST(HttpClientTest, HttpsWithATrustedCertificate) {
  auto server = httpsServer("trusted", routes);
  ClientRequest req;
  req.url = server->url("/secure", "localhost");
  const ClientResponse r = mustSend(req);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "GET /secure auth=- test=- body=");
}

TEST(HttpClientTest, HttpsWithAnUntrustedCertificateIsRefused) {
  std::atomic<int> handled{0};
  auto server = httpsServer("untrusted", [&](HTTPServerRequest& req, HTTPServerResponse& res) {
    ++handled;
    routes(req, res);
  });
  ClientRequest req;
  req.url = server->url("/secure", "localhost");
  auto r = sendRequest(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_THAT(r.error().message, HasSubstr("certificate"));
  EXPECT_FALSE(r.error().retryable) << r.error().message;
  EXPECT_EQ(handled.load(), 0) << "no request may reach a server that failed verification";
}

TEST(HttpClientTest, HttpsToAPlainHttpServerFails) {
  LocalHttpServer server(routes);
  ClientRequest req;
  req.url = "https://127.0.0.1:" + std::to_string(server.port()) + "/";
  req.timeout = 400ms;
  const auto start = std::chrono::steady_clock::now();
  auto r = sendRequest(req);
  ASSERT_FALSE(r.ok());
  // The server waits for a request line that never comes, so the TLS
  // handshake times out (Poco retries the handshake's reads: a few timeouts).
  EXPECT_TRUE(r.error().code == ErrorCode::kTimeout || r.error().code == ErrorCode::kUnavailable)
      << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
}

}  // namespace
