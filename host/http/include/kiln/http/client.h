// Kiln's outbound HTTP client, behind kiln_host.http_request: one request,
// http or https (certificates verified against the system CA bundle), with
// a time limit; redirects are followed only when asked, at most 5.
//
// Deliberately plain: no retries (callers decide; errors say whether a retry
// may help), no proxy, no connection reuse. The outbound-URL policy (which
// hosts plugins may reach) comes in a later issue.
//
// Thread: sendRequest() may be called from many threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "kiln/domain/result.h"

namespace kiln::http {

struct ClientRequest {
  std::string method = "GET";
  std::string url;  // http:// or https://
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // What each network step (connect, TLS handshake, send, receive) may
  // wait; the whole exchange is also checked against it between steps and
  // while the body is read. A peer that stalls inside one step can make the
  // exchange overrun it by a few steps (Poco retries handshake reads).
  std::chrono::milliseconds timeout{30000};
  bool follow_redirects = false;
  size_t max_response_bytes = size_t{16} << 20;
};

struct ClientResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;
};

inline constexpr int kMaxRedirects = 5;

// Any HTTP status is a successful result. Errors: kInvalidArgument (bad URL
// or method, unsupported scheme); kTimeout (the time limit passed);
// kUnavailable (DNS, refused or reset connections, TLS failures, a response
// too large or too many redirects; retryable unless retrying cannot help,
// e.g. a certificate that does not verify).
Result<ClientResponse> sendRequest(const ClientRequest& request);

}  // namespace kiln::http
