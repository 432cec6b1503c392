// Test support: a blocking HTTP/1.1 request to a local server.
#pragma once

#include <map>
#include <string>

namespace kiln::testing {

struct HttpResult {
  int status = 0;
  std::string content_type;
  std::map<std::string, std::string> headers;
  std::string body;
};

HttpResult httpRequest(const std::string& method, const std::string& host, int port,
                       const std::string& path, const std::string& body = "",
                       const std::string& content_type = "application/json",
                       const std::map<std::string, std::string>& headers = {});

}  // namespace kiln::testing
