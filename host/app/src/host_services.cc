#include "host_services.h"

#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "kiln/http/client.h"
#include "kiln/plugin.h"
#include "kiln/process/runner.h"

namespace kiln::app {
namespace {

using nlohmann::json;

constexpr int64_t kDefaultProcessTimeoutMs = 600000;
constexpr int64_t kDefaultHttpTimeoutMs = 30000;
constexpr int64_t kMaxHttpTimeoutMs = 3600000;

Error badRequest(const std::string& service, const std::string& field, const std::string& what) {
  Error e = makeError(ErrorCode::kInvalidArgument, service + " request: \"" + field + "\" " + what);
  e.fields.emplace_back(field, what);
  return e;
}

// Plugin output is not always UTF-8; the answer must still be valid JSON.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<json> parseObject(const std::string& service, const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return makeError(ErrorCode::kInvalidArgument, service + " request: not a JSON object");
  }
  return doc;
}

Result<std::map<std::string, std::string>> stringMap(const std::string& service, const json& doc,
                                                     const std::string& field) {
  std::map<std::string, std::string> out;
  const auto it = doc.find(field);
  if (it == doc.end() || it->is_null()) return out;
  if (!it->is_object()) return badRequest(service, field, "must be an object of strings");
  for (const auto& [k, v] : it->items()) {
    if (!v.is_string()) {
      return badRequest(service, field, "must be an object of strings (\"" + k + "\" is not)");
    }
    out[k] = v.get<std::string>();
  }
  return out;
}

// An optional integer field in [min, max]; `fallback` when absent.
Result<int64_t> integerField(const std::string& service, const json& doc, const std::string& field,
                             int64_t fallback, int64_t min, int64_t max) {
  const auto it = doc.find(field);
  if (it == doc.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return badRequest(service, field, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < min || v > max) {
    return badRequest(service, field,
                      "must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return v;
}

Result<bool> boolField(const std::string& service, const json& doc, const std::string& field,
                       bool fallback) {
  const auto it = doc.find(field);
  if (it == doc.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return badRequest(service, field, "must be true or false");
  return it->get<bool>();
}

Result<std::optional<std::string>> stringField(const std::string& service, const json& doc,
                                               const std::string& field) {
  const auto it = doc.find(field);
  if (it == doc.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return badRequest(service, field, "must be a string");
  return std::optional<std::string>(it->get<std::string>());
}

}  // namespace

std::vector<std::string> ProcessServiceOptions::defaultEnvAllowList() {
  return {process::kDefaultEnvAllowList.begin(), process::kDefaultEnvAllowList.end()};
}

plugins::HostServices::Handler makeRunProcessHandler(ProcessServiceOptions options) {
  const std::vector<std::string_view> names(options.env_allow_list.begin(),
                                            options.env_allow_list.end());
  auto base_env = process::inheritedEnvironment(names);
  return [options, base_env = std::move(base_env)](
             const std::string& request_json,
             const plugins::CallOptions& call) -> Result<std::string> {
    static const std::string kService = "run_process";
    auto doc = parseObject(kService, request_json);
    if (!doc.ok()) return doc.error();
    const json& req = *doc;

    process::ProcessRequest pr;
    const auto argv = req.find("argv");
    if (argv == req.end() || !argv->is_array() || argv->empty()) {
      return badRequest(kService, "argv", "must be a non-empty array of strings");
    }
    for (const auto& a : *argv) {
      if (!a.is_string()) return badRequest(kService, "argv", "must hold only strings");
      pr.argv.push_back(a.get<std::string>());
    }
    auto cwd = stringField(kService, req, "cwd");
    if (!cwd.ok()) return cwd.error();
    if (*cwd) {
      if (cwd->value().empty() || cwd->value()[0] != '/') {
        return badRequest(kService, "cwd", "must be an absolute path");
      }
      pr.cwd = **cwd;
    }
    auto env = stringMap(kService, req, "env");
    if (!env.ok()) return env.error();
    pr.env = base_env;
    for (auto& [k, v] : *env) pr.env[k] = v;  // the request wins
    auto stdin_data = stringField(kService, req, "stdin");
    if (!stdin_data.ok()) return stdin_data.error();
    pr.stdin_data = std::move(stdin_data).value();
    auto timeout_ms = integerField(kService, req, "timeout_ms", kDefaultProcessTimeoutMs, 1,
                                   options.max_timeout.count());
    if (!timeout_ms.ok()) return timeout_ms.error();
    pr.timeout = std::chrono::milliseconds(*timeout_ms);
    auto stream = boolField(kService, req, "stream_output", true);
    if (!stream.ok()) return stream.error();
    pr.kill_grace = options.kill_grace;
    pr.max_captured_bytes = options.max_captured_bytes;

    std::function<void(std::string_view, bool)> on_output;
    if (*stream && call.on_event) {
      on_output = [&call](std::string_view chunk, bool) {
        call.on_event(KILN_EVENT_OUTPUT, chunk);
      };
    }
    auto ran = process::run(pr, call.is_cancelled, on_output);
    if (!ran.ok()) return ran.error();
    const process::ProcessResult& r = *ran;
    return dump(json{{"exit_code", r.exit_code},
                     {"signal", r.signal},
                     {"stdout", r.stdout_data},
                     {"stderr", r.stderr_data},
                     {"timed_out", r.timed_out},
                     {"cancelled", r.cancelled},
                     {"truncated", r.truncated},
                     {"duration_ms", r.duration_ms}});
  };
}

plugins::HostServices::Handler makeHttpRequestHandler() {
  return [](const std::string& request_json, const plugins::CallOptions&) -> Result<std::string> {
    static const std::string kService = "http_request";
    auto doc = parseObject(kService, request_json);
    if (!doc.ok()) return doc.error();
    const json& req = *doc;

    http::ClientRequest hr;
    auto url = stringField(kService, req, "url");
    if (!url.ok()) return url.error();
    if (!*url || (*url)->empty()) return badRequest(kService, "url", "is required");
    hr.url = **url;
    auto method = stringField(kService, req, "method");
    if (!method.ok()) return method.error();
    if (*method) hr.method = **method;
    auto headers = stringMap(kService, req, "headers");
    if (!headers.ok()) return headers.error();
    for (auto& [k, v] : *headers) hr.headers.emplace_back(k, v);
    auto body = stringField(kService, req, "body");
    if (!body.ok()) return body.error();
    if (*body) hr.body = **body;
    auto timeout_ms =
        integerField(kService, req, "timeout_ms", kDefaultHttpTimeoutMs, 1, kMaxHttpTimeoutMs);
    if (!timeout_ms.ok()) return timeout_ms.error();
    hr.timeout = std::chrono::milliseconds(*timeout_ms);
    auto follow = boolField(kService, req, "follow_redirects", false);
    if (!follow.ok()) return follow.error();
    hr.follow_redirects = *follow;

    auto sent = http::sendRequest(hr);
    if (!sent.ok()) return sent.error();
    json response_headers = json::object();
    for (const auto& [k, v] : sent->headers) {
      // One value per name in the answer: repeated headers are joined.
      auto& slot = response_headers[k];
      slot = slot.is_string() ? slot.get<std::string>() + ", " + v : v;
    }
    return dump(json{
        {"status", sent->status}, {"headers", std::move(response_headers)}, {"body", sent->body}});
  };
}

plugins::HostServices makeHostServices(const config::Config& config) {
  plugins::HostServices services;
  services.secrets = config.secrets;
  services.run_process = makeRunProcessHandler();
  services.http_request = makeHttpRequestHandler();
  return services;
}

}  // namespace kiln::app
