// notifier/webhook: POSTs each build event to a URL, signed per Standard
// Webhooks v1 (https://www.standardwebhooks.com): the body is the event
// {"type", "timestamp", "data"}; the headers are webhook-id (the event id,
// the same on every attempt, for the receiver to dedupe on),
// webhook-timestamp (Unix seconds of this attempt) and webhook-signature
// ("v1,<base64 HMAC-SHA256 of '<id>.<timestamp>.<body>'>" keyed with the
// base64-decoded part of the whsec_ secret). It goes to `url` when
// configured, else to the build's callback_url (the request's "target").
//
// Outcomes: 2xx is delivered. Any other status fails the attempt with a
// retryable error, so the host retries with backoff; redirects are never
// followed and count as failures (a 3xx is not a delivery). The one
// exception is 410 Gone, the spec's "disable this endpoint": not retryable.
// Rationale: other 4xx are retried too (Standard Webhooks senders do): they
// are usually a receiver's misconfiguration (a route not deployed yet, a
// secret being rotated) that is fixed within the hours the host keeps
// trying, and a few more requests cost nothing. Transport failures (refused,
// timed out) are the host http_request service's errors (UNAVAILABLE or
// TIMEOUT), which the host retries; they pass through with its message.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

using nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr std::string_view kSecretPrefix = "whsec_";
constexpr size_t kBodyExcerptBytes = 200;

std::string base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

// Standard base64 (padding optional); nullopt when malformed.
std::optional<std::string> base64Decode(std::string text) {
  size_t pad = 0;
  while (!text.empty() && text.back() == '=') {
    text.pop_back();
    ++pad;
  }
  if (pad > 2 || text.size() % 4 == 1) return std::nullopt;
  for (char c : text) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/';
    if (!ok) return std::nullopt;
  }
  const size_t missing = (4 - text.size() % 4) % 4;
  text.append(missing, '=');
  // EVP_DecodeBlock counts padding as zero bytes: drop them afterwards.
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<size_t>(n) - missing);
  return out;
}

std::string hmacSha256(std::string_view key, std::string_view message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest,
           &size) == nullptr) {
    throw kiln::sdk::Error("HMAC-SHA256 failed in OpenSSL", KILN_ERR_INTERNAL);
  }
  return std::string(reinterpret_cast<const char*>(digest), size);
}

// The first `max` bytes of a receiver's answer, fit for an error message:
// control characters become spaces, invalid UTF-8 becomes '?', and a
// multi-byte character is never cut in half.
std::string excerpt(std::string_view text, size_t max) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xE  ? 3
                 : (c >> 3) == 0x1E ? 4
                                    : 0;
    bool valid = len > 0 && i + len <= text.size();
    for (size_t k = 1; valid && k < len; ++k) {
      valid = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    }
    const size_t take = valid ? len : 1;
    if (i + take > max) break;
    if (!valid) {
      out += '?';
    } else if (c < 0x20 || c == 0x7F) {
      out += ' ';
    } else {
      out.append(text.substr(i, len));
    }
    i += take;
  }
  if (i < text.size()) out += "...";
  return out;
}

// The URL without userinfo, query or fragment, for messages: they may hold tokens.
std::string shownUrl(const std::string& url) {
  std::string out = url.substr(0, url.find_first_of("?#"));
  const size_t scheme = out.find("://");
  const size_t host = scheme == std::string::npos ? 0 : scheme + 3;
  const size_t at = out.find('@', host);
  if (at != std::string::npos && at < out.find('/', host)) out.erase(host, at + 1 - host);
  return out;
}

bool isHttpUrl(const std::string& url) {
  return url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return s;
}

class WebhookNotifier : public kiln::sdk::Notifier {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "webhook",
      "Webhook notifier",
      "0.1.0",
      "POSTs build events to a URL (or the build's callback_url), signed per Standard Webhooks.",
      R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
          "url": {
            "type": "string", "pattern": "^https?://",
            "description": "Where to POST; without it, the build's callback_url."
          },
          "secret": {
            "type": "string", "pattern": "^whsec_",
            "description": "The signing secret, whsec_<base64 of 24 to 64 random bytes>; use secret_file or ${ENV}."
          },
          "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 120000, "default": 10000},
          "headers": {
            "type": "object", "additionalProperties": {"type": "string"},
            "description": "Extra request headers, e.g. an Authorization the receiver wants."
          }
        },
        "required": ["secret"],
        "additionalProperties": false
      })",
      0,
      "https://www.standardwebhooks.com"};

  WebhookNotifier(kiln::sdk::Call&, std::string_view config_json) {
    const json config = json::parse(config_json);
    url_ = config.value("url", "");
    if (!url_.empty() && !isHttpUrl(url_)) {
      throw kiln::sdk::Error("url must start with http:// or https://", KILN_ERR_INVALID_ARGUMENT);
    }
    std::string secret = config.value("secret", "");
    while (!secret.empty() &&
           (secret.back() == '\n' || secret.back() == '\r' || secret.back() == ' ')) {
      secret.pop_back();  // a secret_file usually ends with a newline
    }
    if (secret.rfind(kSecretPrefix, 0) != 0) {
      throw kiln::sdk::Error("secret must look like whsec_<base64>", KILN_ERR_INVALID_ARGUMENT);
    }
    auto key = base64Decode(secret.substr(kSecretPrefix.size()));
    if (!key) {
      throw kiln::sdk::Error("secret: the part after whsec_ is not valid base64",
                             KILN_ERR_INVALID_ARGUMENT);
    }
    if (key->size() < 24 || key->size() > 64) {
      throw kiln::sdk::Error(
          "secret: Standard Webhooks secrets are 24 to 64 random bytes, this "
          "one decodes to " +
              std::to_string(key->size()) +
              " (make one with: echo whsec_$(openssl rand -base64 32))",
          KILN_ERR_INVALID_ARGUMENT);
    }
    key_ = std::move(*key);
    timeout_ms_ = config.value("timeout_ms", 10000);
    const json headers = config.value("headers", json::object());
    for (const auto& [name, value] : headers.items()) {
      const std::string n = lower(name);
      if (n.rfind("webhook-", 0) == 0 || n == "content-type" || n == "content-length" ||
          n == "host") {
        throw kiln::sdk::Error("headers: \"" + name + "\" is set by the notifier itself",
                               KILN_ERR_INVALID_ARGUMENT);
      }
      headers_.emplace_back(n, value.get<std::string>());
    }
  }

  std::string notify(kiln::sdk::Call& call, std::string_view request_json) override {
    // Ordered: the body keeps the keys in the order the host planned them.
    const ordered_json request = ordered_json::parse(request_json);
    if (!request.contains("event") || !request["event"].is_object()) {
      throw kiln::sdk::Error("the request has no event object", KILN_ERR_INVALID_ARGUMENT);
    }
    ordered_json event = request["event"];
    const auto id = event.find("id");
    if (id == event.end() || !id->is_string() || id->get<std::string>().empty()) {
      throw kiln::sdk::Error("the event has no id (the webhook-id)", KILN_ERR_INVALID_ARGUMENT);
    }
    const std::string msg_id = id->get<std::string>();
    if (msg_id.find('.') != std::string::npos) {
      throw kiln::sdk::Error("the event id \"" + msg_id +
                                 "\" contains \".\", which a webhook-id "
                                 "must not",
                             KILN_ERR_INVALID_ARGUMENT);
    }
    event.erase("id");  // the body is {type, timestamp, data}; the id is a header

    std::string url = url_;
    if (url.empty()) {
      const auto target = request.find("target");
      if (target != request.end() && target->is_string()) url = target->get<std::string>();
    }
    if (url.empty()) {
      throw kiln::sdk::Error("no url is configured and the build has no callback_url",
                             KILN_ERR_INVALID_ARGUMENT);
    }
    if (!isHttpUrl(url)) {
      throw kiln::sdk::Error("cannot deliver to \"" + shownUrl(url) +
                                 "\": only http:// and https:// URLs are supported",
                             KILN_ERR_INVALID_ARGUMENT);
    }

    // Signed over exactly the bytes sent.
    const std::string body = event.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
    const std::string timestamp =
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
    const std::string signature =
        "v1," + base64Encode(hmacSha256(key_, msg_id + "." + timestamp + "." + body));

    json headers = json::object();
    for (const auto& [name, value] : headers_) headers[name] = value;
    headers["content-type"] = "application/json";
    headers["webhook-id"] = msg_id;
    headers["webhook-timestamp"] = timestamp;
    headers["webhook-signature"] = signature;
    const json http_request = {{"method", "POST"},          {"url", url},
                               {"headers", headers},        {"body", body},
                               {"timeout_ms", timeout_ms_}, {"follow_redirects", false}};
    const json response = json::parse(call.httpRequest(http_request.dump()));
    const int status = response.value("status", 0);
    if (status >= 200 && status < 300) {
      return json{{"delivered", true}, {"detail", "HTTP " + std::to_string(status)}}.dump();
    }

    std::string message = "HTTP " + std::to_string(status) + " from " + shownUrl(url);
    const std::string answer = response.contains("body") && response["body"].is_string()
                                   ? response["body"].get<std::string>()
                                   : std::string();
    if (status >= 300 && status < 400) {
      std::string location;
      if (response.contains("headers") && response["headers"].is_object()) {
        for (const auto& [name, value] : response["headers"].items()) {
          if (lower(name) == "location" && value.is_string()) location = value.get<std::string>();
        }
      }
      message += " (redirects are not followed" +
                 (location.empty() ? std::string() : "; Location: " + shownUrl(location)) + ")";
    }
    if (!answer.empty()) message += ": " + excerpt(answer, kBodyExcerptBytes);
    if (status == 410) {
      throw kiln::sdk::Error(message +
                                 " (410 Gone: the receiver retired this endpoint; not "
                                 "retrying)",
                             KILN_ERR_FAILED, false);
    }
    throw kiln::sdk::Error(message, KILN_ERR_UNAVAILABLE, true);
  }

 private:
  std::string url_;
  std::string key_;  // the decoded signing secret
  int timeout_ms_ = 10000;
  std::vector<std::pair<std::string, std::string>> headers_;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-notifier-webhook", "0.1.0", WebhookNotifier)
