#include "http_client.h"

#include <sstream>

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/StreamCopier.h>

namespace kiln::testing {

HttpResult httpRequest(const std::string& method, const std::string& host, int port,
                       const std::string& path, const std::string& body,
                       const std::string& content_type) {
  Poco::Net::HTTPClientSession session(host, static_cast<Poco::UInt16>(port));
  session.setTimeout(Poco::Timespan(10, 0));
  Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
  if (!body.empty()) {
    request.setContentType(content_type);
    request.setContentLength(static_cast<std::streamsize>(body.size()));
  }
  session.sendRequest(request) << body;
  Poco::Net::HTTPResponse response;
  std::istream& in = session.receiveResponse(response);
  HttpResult out;
  out.status = static_cast<int>(response.getStatus());
  out.content_type = response.getContentType();
  for (const auto& [k, v] : response) out.headers[k] = v;
  std::ostringstream text;
  Poco::StreamCopier::copyStream(in, text);
  out.body = text.str();
  return out;
}

}  // namespace kiln::testing
