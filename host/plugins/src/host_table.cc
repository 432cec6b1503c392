// The kiln_host functions plugins call back into.
#include <iostream>

#include <nlohmann/json.hpp>

#include "abi_bridge.h"

namespace kiln::plugins {
namespace {

std::string_view view(kiln_str s) {
  return s.size == 0 || s.data == nullptr ? std::string_view() : std::string_view(s.data, s.size);
}

kiln_str hand(kiln_call* call, std::string value) {
  call->arena.push_back(std::move(value));
  const std::string& kept = call->arena.back();
  return kiln_str{kept.data(), kept.size()};
}

void recordError(kiln_call* call, kiln_status code, bool retryable, std::string message) {
  call->error_set = true;
  call->error_code = code;
  call->error_retryable = retryable;
  call->error_message = std::move(message);
}

kiln_status toStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return KILN_ERR_INVALID_ARGUMENT;
    case ErrorCode::kNotFound: return KILN_ERR_NOT_FOUND;
    case ErrorCode::kUnavailable: return KILN_ERR_UNAVAILABLE;
    case ErrorCode::kCancelled: return KILN_ERR_CANCELLED;
    case ErrorCode::kTimeout: return KILN_ERR_TIMEOUT;
    case ErrorCode::kUnsupported: return KILN_ERR_UNSUPPORTED;
    case ErrorCode::kFailed:
    case ErrorCode::kConflict:
    case ErrorCode::kResourceExhausted: return KILN_ERR_FAILED;
    case ErrorCode::kPluginBug:
    case ErrorCode::kInternal: return KILN_ERR_INTERNAL;
  }
  return KILN_ERR_INTERNAL;
}

const LoadedLibrary* libraryOf(const kiln_host* host) {
  return host == nullptr ? nullptr : static_cast<const LoadedLibrary*>(host->host_data);
}

void hostLog(const kiln_host* host, kiln_call* call, kiln_log_level level, kiln_str message) {
  const LoadedLibrary* lib = call != nullptr ? call->library : libraryOf(host);
  if (lib == nullptr) return;
  std::string line = "[plugin ";
  line += call != nullptr ? describeCallee(*call) : lib->path();
  if (call != nullptr && call->options != nullptr && !call->options->build_id.empty()) {
    line += " build " + call->options->build_id;
  }
  line += "] ";
  line += view(message);
  const LogLevel lvl = level <= KILN_LOG_DEBUG  ? LogLevel::kDebug
                       : level == KILN_LOG_INFO ? LogLevel::kInfo
                       : level == KILN_LOG_WARN ? LogLevel::kWarn
                                                : LogLevel::kError;
  lib->log(lvl, line);
}

void hostEmit(kiln_call* call, kiln_event_kind kind, kiln_str payload) {
  if (call == nullptr) return;
  if (call->options != nullptr && call->options->on_event) {
    call->options->on_event(kind, view(payload));
    return;
  }
  hostLog(nullptr, call, KILN_LOG_INFO, payload);
}

bool hostIsCancelled(kiln_call* call) {
  return call != nullptr && call->options != nullptr && call->options->is_cancelled &&
         call->options->is_cancelled();
}

void hostSetError(kiln_call* call, kiln_status code, bool retryable, kiln_str message) {
  if (call == nullptr) return;
  recordError(call, code, retryable, std::string(view(message)));
}

kiln_status hostSetResult(kiln_call* call, kiln_str json) {
  if (call == nullptr) return KILN_ERR_INVALID_ARGUMENT;
  const std::string_view text = view(json);
  if (!nlohmann::json::accept(text)) {
    call->invalid_result =
        "set_result was given invalid JSON (" + std::to_string(text.size()) + " bytes)";
    recordError(call, KILN_ERR_INTERNAL, false, call->invalid_result);
    return KILN_ERR_INVALID_ARGUMENT;
  }
  call->result = std::string(text);
  return KILN_OK;
}

kiln_status hostGetSecret(kiln_call* call, kiln_str name, kiln_str* value) {
  if (call == nullptr || value == nullptr) return KILN_ERR_INVALID_ARGUMENT;
  const auto& secrets = call->library->services().secrets;
  const auto it = secrets.find(std::string(view(name)));
  if (it == secrets.end()) return KILN_ERR_NOT_FOUND;
  *value = hand(call, it->second);
  return KILN_OK;
}

kiln_status runService(kiln_call* call, const HostServices::Handler& handler, const char* what,
                       kiln_str request, kiln_str* out) {
  if (call == nullptr || out == nullptr) return KILN_ERR_INVALID_ARGUMENT;
  *out = kiln_str{nullptr, 0};
  if (!handler) {
    recordError(call, KILN_ERR_UNAVAILABLE, false,
                std::string("the host service ") + what + " is not available in this kiln");
    return KILN_ERR_UNAVAILABLE;
  }
  static const CallOptions kNoOptions;
  auto result =
      handler(std::string(view(request)), call->options != nullptr ? *call->options : kNoOptions);
  if (!result.ok()) {
    recordError(call, toStatus(result.error().code), result.error().retryable,
                result.error().message);
    return toStatus(result.error().code);
  }
  *out = hand(call, std::move(result).value());
  return KILN_OK;
}

kiln_status hostHttpRequest(kiln_call* call, kiln_str request, kiln_str* response) {
  return runService(call, call->library->services().http_request, "http_request", request,
                    response);
}

kiln_status hostRunProcess(kiln_call* call, kiln_str request, kiln_str* result) {
  return runService(call, call->library->services().run_process, "run_process", request, result);
}

const void* hostGetExtension(const kiln_host*, const char*) {
  return nullptr;  // ABI 1.0 defines no extensions yet
}

}  // namespace

std::string describeCallee(const kiln_call& call) {
  std::string out;
  if (call.instance_name != nullptr)
    out = "instance \"" + *call.instance_name + "\" (";
  else
    out = "plugin ";
  if (call.plugin != nullptr) out += call.plugin->ref.str() + " from ";
  out += call.library->path();
  if (call.instance_name != nullptr) out += ")";
  return out;
}

void fillHostTable(kiln_host* host, const LoadedLibrary* library) {
  *host = kiln_host{};
  host->struct_size = sizeof(kiln_host);
  host->abi_major = KILN_ABI_VERSION_MAJOR;
  host->abi_minor = KILN_ABI_VERSION_MINOR;
  host->host_name = "kiln";
  host->host_version = KILN_VERSION;
  host->host_data = const_cast<LoadedLibrary*>(library);
  host->log = &hostLog;
  host->emit = &hostEmit;
  host->is_cancelled = &hostIsCancelled;
  host->set_error = &hostSetError;
  host->set_result = &hostSetResult;
  host->get_secret = &hostGetSecret;
  host->http_request = &hostHttpRequest;
  host->run_process = &hostRunProcess;
  host->get_extension = &hostGetExtension;
}

}  // namespace kiln::plugins
