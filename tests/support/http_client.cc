#include "http_client.h"

#include <sstream>

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/StreamCopier.h>

namespace kiln::testing {

HttpResult httpRequest(const std::string& method, const std::string& host, int port,
                       const std::string& path, const std::string& body,
                       const std::string& content_type,
                       const std::map<std::string, std::string>& headers) {
  HttpResult out;
  try {
    Poco::Net::HTTPClientSession session(host, static_cast<Poco::UInt16>(port));
    session.setTimeout(Poco::Timespan(10, 0));
    Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
    if (!body.empty() || method == "POST") {
      if (!content_type.empty()) request.setContentType(content_type);
      request.setContentLength(static_cast<std::streamsize>(body.size()));
    }
    for (const auto& [k, v] : headers) request.set(k, v);
    session.sendRequest(request) << body;
    Poco::Net::HTTPResponse response;
    std::istream& in = session.receiveResponse(response);
    out.status = static_cast<int>(response.getStatus());
    out.content_type = response.getContentType();
    for (const auto& [k, v] : response) out.headers[k] = v;
    std::ostringstream text;
    Poco::StreamCopier::copyStream(in, text);
    out.body = text.str();
  } catch (const std::exception& e) {
    // A transport failure is a result too: tests report which request failed.
    out.status = -1;
    out.body = std::string("transport error on ") + method + " " + path + ": " + e.what();
  }
  return out;
}

}  // namespace kiln::testing
