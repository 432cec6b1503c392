#include "kiln/http/client.h"

#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/NetSSL.h>
#include <Poco/Net/RejectCertificateHandler.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Timespan.h>
#include <Poco/URI.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>

namespace kiln::http {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// One TLS client context for the process: the system CA bundle, peer and
// host name verified, and any certificate that fails rejected (Poco's
// default handler would ask on the console).
Poco::Net::Context::Ptr tlsContext() {
  static std::once_flag once;
  static Poco::Net::Context::Ptr context;
  std::call_once(once, [] {
    Poco::Net::initializeSSL();
    Poco::Net::Context::Params params;
    params.verificationMode = Poco::Net::Context::VERIFY_RELAXED;  // client: verify the peer
    params.loadDefaultCAs = true;
    context = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
    Poco::Net::SSLManager::instance().initializeClient(
        nullptr, new Poco::Net::RejectCertificateHandler(/*handleErrorsOnServerSide=*/false),
        context);
  });
  return context;
}

// The URL without user info, query or fragment: errors end up in logs, and
// tokens sometimes travel in query strings.
std::string describe(const Poco::URI& uri) {
  std::string out = uri.getScheme() + "://" + uri.getHost();
  const bool default_port = (uri.getScheme() == "http" && uri.getPort() == 80) ||
                            (uri.getScheme() == "https" && uri.getPort() == 443);
  if (!default_port) out += ":" + std::to_string(uri.getPort());
  out += uri.getPath().empty() ? "/" : uri.getPath();
  return out;
}

bool isToken(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
  });
}

bool isRedirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

void dropHeaders(std::vector<std::pair<std::string, std::string>>* headers,
                 std::initializer_list<std::string_view> names) {
  std::erase_if(*headers, [&](const auto& h) {
    return std::any_of(names.begin(), names.end(),
                       [&](std::string_view n) { return equalsIgnoreCase(h.first, n); });
  });
}

Error timeoutError(const Poco::URI& uri, milliseconds timeout) {
  return makeError(ErrorCode::kTimeout,
                   "HTTP request to " + describe(uri) + " timed out after " +
                       std::to_string(timeout.count()) + " ms",
                   true);
}

}  // namespace

Result<ClientResponse> sendRequest(const ClientRequest& request) {
  if (request.timeout.count() <= 0) {
    return makeError(ErrorCode::kInvalidArgument, "HTTP request: timeout must be positive");
  }
  if (!isToken(request.method)) {
    return makeError(ErrorCode::kInvalidArgument,
                     "HTTP request: invalid method \"" + request.method + "\"");
  }
  Poco::URI uri;
  try {
    uri = Poco::URI(request.url);
  } catch (const Poco::Exception& e) {
    return makeError(ErrorCode::kInvalidArgument, "HTTP request: invalid URL: " + e.displayText());
  }
  const Clock::time_point deadline = Clock::now() + request.timeout;
  std::string method = request.method;
  std::string body = request.body;
  auto headers = request.headers;

  for (int redirects = 0;; ++redirects) {
    if (uri.getScheme() != "http" && uri.getScheme() != "https") {
      return makeError(
          ErrorCode::kInvalidArgument,
          "HTTP request: unsupported URL scheme \"" + uri.getScheme() + "\" (http and https are)");
    }
    if (uri.getHost().empty()) {
      return makeError(ErrorCode::kInvalidArgument, "HTTP request: the URL has no host");
    }
    try {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return timeoutError(uri, request.timeout);
      std::unique_ptr<Poco::Net::HTTPClientSession> session;
      if (uri.getScheme() == "https") {
        session = std::make_unique<Poco::Net::HTTPSClientSession>(uri.getHost(), uri.getPort(),
                                                                  tlsContext());
      } else {
        session = std::make_unique<Poco::Net::HTTPClientSession>(uri.getHost(), uri.getPort());
      }
      session->setTimeout(Poco::Timespan(static_cast<Poco::Timespan::TimeDiff>(left.count()) *
                                         Poco::Timespan::MILLISECONDS));
      std::string target = uri.getPathAndQuery();
      if (target.empty() || target[0] != '/') target = "/" + target;
      Poco::Net::HTTPRequest req(method, target, Poco::Net::HTTPMessage::HTTP_1_1);
      for (const auto& [name, value] : headers) req.add(name, value);
      if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
        req.setContentLength(static_cast<std::streamsize>(body.size()));
      }
      std::ostream& out = session->sendRequest(req);
      out.write(body.data(), static_cast<std::streamsize>(body.size()));

      Poco::Net::HTTPResponse res;
      std::istream& in = session->receiveResponse(res);
      ClientResponse response;
      char buf[16384];
      while (in.read(buf, sizeof buf) || in.gcount() > 0) {
        response.body.append(buf, static_cast<size_t>(in.gcount()));
        if (response.body.size() > request.max_response_bytes) {
          return makeError(ErrorCode::kUnavailable,
                           "HTTP response from " + describe(uri) + " is larger than " +
                               std::to_string(request.max_response_bytes) + " bytes");
        }
        if (Clock::now() >= deadline) return timeoutError(uri, request.timeout);
      }
      response.status = static_cast<int>(res.getStatus());
      for (const auto& [name, value] : res) response.headers.emplace_back(name, value);

      if (!request.follow_redirects || !isRedirect(response.status) || !res.has("Location")) {
        return response;
      }
      if (redirects == kMaxRedirects) {
        return makeError(ErrorCode::kUnavailable,
                         "HTTP request to " + describe(Poco::URI(request.url)) + ": more than " +
                             std::to_string(kMaxRedirects) + " redirects");
      }
      Poco::URI next(uri);
      next.resolve(res.get("Location"));
      if (response.status == 303 ||
          ((response.status == 301 || response.status == 302) && method == "POST")) {
        method = "GET";  // what browsers and curl do
        body.clear();
        dropHeaders(&headers, {"Content-Type", "Content-Length"});
      }
      // Credentials are for the origin they were given for.
      if (next.getScheme() != uri.getScheme() || next.getHost() != uri.getHost() ||
          next.getPort() != uri.getPort()) {
        dropHeaders(&headers, {"Authorization", "Proxy-Authorization", "Cookie"});
      }
      uri = next;
    } catch (const Poco::TimeoutException&) {
      return timeoutError(uri, request.timeout);
    } catch (const Poco::Net::SSLException& e) {
      // OpenSSL reports a failed verification as a plain SSLException.
      const std::string text = e.displayText();
      const bool certificate =
          dynamic_cast<const Poco::Net::InvalidCertificateException*>(&e) != nullptr ||
          dynamic_cast<const Poco::Net::CertificateValidationException*>(&e) != nullptr ||
          text.find("certificate verify failed") != std::string::npos;
      if (certificate) {  // trying again will not help
        return makeError(ErrorCode::kUnavailable, "HTTP request to " + describe(uri) +
                                                      ": TLS certificate rejected: " + text);
      }
      return makeError(ErrorCode::kUnavailable,
                       "HTTP request to " + describe(uri) + " failed: " + text, true);
    } catch (const Poco::SyntaxException& e) {
      return makeError(ErrorCode::kInvalidArgument,
                       "HTTP request to " + describe(uri) + ": " + e.displayText());
    } catch (const Poco::Exception& e) {
      // DNS, refused/reset connections, TLS handshakes, malformed responses.
      return makeError(ErrorCode::kUnavailable,
                       "HTTP request to " + describe(uri) + " failed: " + e.displayText(), true);
    }
  }
}

}  // namespace kiln::http
