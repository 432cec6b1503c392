// Kiln plugin SDK: header-only C++17 glue over the C ABI in kiln/plugin.h.
//
// Write a class deriving from one kind base (CodeAgent, TemplateProvider,
// GitHost, CiTrigger, Notifier), give it a `static constexpr PluginInfo
// kInfo`, a constructor `(Call&, std::string_view config_json)`, override
// the kind's functions, and export the library once:
//
//   class Echo : public kiln::sdk::CodeAgent {
//    public:
//     static constexpr kiln::sdk::PluginInfo kInfo{"echo", "Echo agent", "1.0.0",
//                                                  "Answers with the prompt.", "{}"};
//     Echo(kiln::sdk::Call&, std::string_view /*config_json*/) {}
//     std::string execute(kiln::sdk::Call& call, std::string_view request) override;
//   };
//   KILN_PLUGIN_LIBRARY("my-plugins", "1.0.0", Echo)
//
// Rationale: the SDK is compiled into each plugin, never shipped as a shared
// C++ library, so no C++ ABI couples a plugin to the host's compiler. The
// trampolines are noexcept: every exception becomes a status plus message
// (kiln::sdk::Error keeps its code and retryable flag; anything else is
// KILN_ERR_INTERNAL), so a throwing plugin cannot take the host down.
// Optional kind functions a class does not override are exported as NULL,
// which the host reports as "not supported by this plugin".
#ifndef KILN_SDK_HPP
#define KILN_SDK_HPP

#include <array>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "kiln/plugin.h"

namespace kiln::sdk {

// Throw to fail a call with a specific status (default: the work failed).
class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, kiln_status code = KILN_ERR_FAILED, bool retryable = false)
      : std::runtime_error(std::move(message)), code_(code), retryable_(retryable) {}
  kiln_status code() const noexcept { return code_; }
  bool retryable() const noexcept { return retryable_; }
  // True when the host already recorded the error for this call (a failed
  // host service); the trampoline then leaves the host's message in place.
  bool recordedByHost() const noexcept { return recorded_by_host_; }

 protected:
  bool recorded_by_host_ = false;

 private:
  kiln_status code_;
  bool retryable_;
};

// A host service (http_request, run_process, get_secret) failed; the host's
// own message and retryability are what the call reports if not caught.
class HostServiceError : public Error {
 public:
  HostServiceError(std::string service, kiln_status code)
      : Error("host service " + service + " failed", code, false) {
    recorded_by_host_ = true;
  }
};

inline kiln_str toStr(std::string_view s) noexcept {
  return kiln_str{s.data(), s.size()};
}
inline std::string_view toView(kiln_str s) noexcept {
  return s.size == 0 ? std::string_view() : std::string_view(s.data, s.size);
}

// Quotes `text` as a JSON string (the SDK has no JSON library dependency;
// plugins usually bring their own, this covers the SDK's small needs).
inline std::string jsonQuote(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          static const char kHex[] = "0123456789abcdef";
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

namespace detail {
// The host table given to init(); one per plugin library (hidden visibility).
inline const kiln_host*& hostSlot() noexcept {
  static const kiln_host* host = nullptr;
  return host;
}
}  // namespace detail

// The host as seen by the library, outside any call (e.g. for logging).
inline const kiln_host* host() noexcept {
  return detail::hostSlot();
}

// One invocation: the host services for this call. Valid only during it.
class Call {
 public:
  Call(const kiln_host* host, kiln_call* call) noexcept : host_(host), call_(call) {}

  void log(kiln_log_level level, std::string_view message) const {
    host_->log(host_, call_, level, toStr(message));
  }
  void debug(std::string_view m) const { log(KILN_LOG_DEBUG, m); }
  void info(std::string_view m) const { log(KILN_LOG_INFO, m); }
  void warn(std::string_view m) const { log(KILN_LOG_WARN, m); }
  void error(std::string_view m) const { log(KILN_LOG_ERROR, m); }

  // Appends text to the build's output log.
  void output(std::string_view text) const { host_->emit(call_, KILN_EVENT_OUTPUT, toStr(text)); }

  // Reports progress; percent < 0 means unknown.
  void progress(std::string_view message, int percent = -1) const {
    std::string payload = "{\"message\":" + jsonQuote(message);
    if (percent >= 0) payload += ",\"percent\":" + std::to_string(percent);
    payload += "}";
    host_->emit(call_, KILN_EVENT_PROGRESS, toStr(payload));
  }

  bool cancelled() const { return host_->is_cancelled(call_); }

  // Throws Error(KILN_ERR_CANCELLED) when the host asked to stop.
  void throwIfCancelled() const {
    if (cancelled()) throw Error("cancelled by the host", KILN_ERR_CANCELLED);
  }

  // The named secret, or nullopt when not configured.
  std::optional<std::string> secret(std::string_view name) const {
    kiln_str value{nullptr, 0};
    const kiln_status st = host_->get_secret(call_, toStr(name), &value);
    if (st == KILN_ERR_NOT_FOUND) return std::nullopt;
    if (st != KILN_OK) throw HostServiceError("get_secret", st);
    return std::string(toView(value));
  }

  // kiln_host.http_request; throws HostServiceError when the host reports a
  // failure (the host recorded its message; catch it to recover).
  std::string httpRequest(std::string_view request_json) const {
    kiln_str response{nullptr, 0};
    checkHost(host_->http_request(call_, toStr(request_json), &response), "http_request");
    return std::string(toView(response));
  }

  // kiln_host.run_process; throws Error like httpRequest.
  std::string runProcess(std::string_view request_json) const {
    kiln_str result{nullptr, 0};
    checkHost(host_->run_process(call_, toStr(request_json), &result), "run_process");
    return std::string(toView(result));
  }

  const kiln_host* hostTable() const noexcept { return host_; }
  kiln_call* raw() const noexcept { return call_; }

 private:
  static void checkHost(kiln_status st, const char* what) {
    if (st != KILN_OK) throw HostServiceError(what, st);
  }

  const kiln_host* host_;
  kiln_call* call_;
};

// Static metadata every plugin class declares as `static constexpr
// PluginInfo kInfo`. Strings must be literals (they outlive the library's use).
struct PluginInfo {
  const char* id;
  const char* name;
  const char* version;
  const char* description;
  const char* config_schema;  // JSON Schema draft-07; "{}" accepts anything
  uint32_t flags = 0;         // KILN_PLUGIN_FLAG_*
  const char* homepage = nullptr;
};

// ---- Kind bases. Results are JSON documents as described in plugin.h. ----

class CodeAgent {
 public:
  static constexpr const char* kKind = KILN_KIND_CODE_AGENT_V1;
  virtual ~CodeAgent() = default;
  virtual std::string execute(Call& call, std::string_view request_json) = 0;
};

class TemplateProvider {
 public:
  static constexpr const char* kKind = KILN_KIND_TEMPLATE_PROVIDER_V1;
  virtual ~TemplateProvider() = default;
  virtual std::string render(Call& call, std::string_view request_json) = 0;
  virtual std::string list(Call&, std::string_view) {
    throw Error("list is not supported", KILN_ERR_UNSUPPORTED);
  }
};

class GitHost {
 public:
  static constexpr const char* kKind = KILN_KIND_GIT_HOST_V1;
  virtual ~GitHost() = default;
  virtual std::string credentials(Call& call, std::string_view request_json) = 0;
  virtual std::string createRepository(Call&, std::string_view) {
    throw Error("create_repository is not supported", KILN_ERR_UNSUPPORTED);
  }
  virtual std::string openChangeRequest(Call&, std::string_view) {
    throw Error("open_change_request is not supported", KILN_ERR_UNSUPPORTED);
  }
};

class CiTrigger {
 public:
  static constexpr const char* kKind = KILN_KIND_CI_TRIGGER_V1;
  virtual ~CiTrigger() = default;
  virtual std::string trigger(Call& call, std::string_view request_json) = 0;
  virtual std::string status(Call&, std::string_view) {
    throw Error("status is not supported", KILN_ERR_UNSUPPORTED);
  }
};

class Notifier {
 public:
  static constexpr const char* kKind = KILN_KIND_NOTIFIER_V1;
  virtual ~Notifier() = default;
  virtual std::string notify(Call& call, std::string_view request_json) = 0;
};

namespace detail {

// Runs `fn` and turns any exception into set_error + status.
template <class Fn>
kiln_status guard(kiln_call* call, Fn&& fn) noexcept {
  const kiln_host* h = hostSlot();
  if (h == nullptr) return KILN_ERR_INTERNAL;  // called before init(): a host bug
  auto fail = [&](kiln_status code, bool retryable, std::string_view msg) noexcept {
    h->set_error(call, code, retryable, toStr(msg));
    return code;
  };
  try {
    return fn(Call(h, call));
  } catch (const Error& e) {
    if (e.recordedByHost() && e.code() != KILN_OK) return e.code();
    return fail(e.code() == KILN_OK ? KILN_ERR_INTERNAL : e.code(), e.retryable(), e.what());
  } catch (const std::exception& e) {
    return fail(KILN_ERR_INTERNAL, false, std::string("uncaught exception: ") + e.what());
  } catch (...) {
    return fail(KILN_ERR_INTERNAL, false, "uncaught exception of unknown type");
  }
}

inline kiln_status deliver(Call& call, const std::string& result) {
  return call.hostTable()->set_result(call.raw(), toStr(result));
}

// Invokes a member function producing a result document. Fn may name a
// member of T or of its kind base (an optional function T did not override).
template <class T, auto Fn>
kiln_status invoke(void* instance, kiln_call* call, kiln_str request) noexcept {
  return guard(call, [&](Call c) -> kiln_status {
    if (instance == nullptr) throw Error("called with a NULL instance", KILN_ERR_INTERNAL);
    return deliver(c, (static_cast<T*>(instance)->*Fn)(c, toView(request)));
  });
}

// The table entry for an optional function: NULL unless T overrides it.
// Rationale: &T::f names the base's member when T does not override, which
// is visible in its type; comparing values would not work for virtuals.
#define KILN_SDK_OPTIONAL(T, Base, method)                                              \
  (std::is_same_v<decltype(&T::method), std::string (Base::*)(Call&, std::string_view)> \
       ? nullptr                                                                        \
       : &::kiln::sdk::detail::invoke<T, &T::method>)

template <class T>
struct Tables {
  static constexpr kiln_code_agent_v1 agent() {
    return {sizeof(kiln_code_agent_v1), &invoke<T, &T::execute>};
  }
  static constexpr kiln_template_provider_v1 templates() {
    return {sizeof(kiln_template_provider_v1), &invoke<T, &T::render>,
            KILN_SDK_OPTIONAL(T, TemplateProvider, list)};
  }
  static constexpr kiln_git_host_v1 gitHost() {
    return {sizeof(kiln_git_host_v1), &invoke<T, &T::credentials>,
            KILN_SDK_OPTIONAL(T, GitHost, createRepository),
            KILN_SDK_OPTIONAL(T, GitHost, openChangeRequest)};
  }
  static constexpr kiln_ci_trigger_v1 ci() {
    return {sizeof(kiln_ci_trigger_v1), &invoke<T, &T::trigger>,
            KILN_SDK_OPTIONAL(T, CiTrigger, status)};
  }
  static constexpr kiln_notifier_v1 notifier() {
    return {sizeof(kiln_notifier_v1), &invoke<T, &T::notify>};
  }

  static const void* table() noexcept {
    if constexpr (std::is_base_of_v<CodeAgent, T>) {
      static constexpr kiln_code_agent_v1 t = agent();
      return &t;
    } else if constexpr (std::is_base_of_v<TemplateProvider, T>) {
      static constexpr kiln_template_provider_v1 t = templates();
      return &t;
    } else if constexpr (std::is_base_of_v<GitHost, T>) {
      static constexpr kiln_git_host_v1 t = gitHost();
      return &t;
    } else if constexpr (std::is_base_of_v<CiTrigger, T>) {
      static constexpr kiln_ci_trigger_v1 t = ci();
      return &t;
    } else {
      static constexpr kiln_notifier_v1 t = notifier();
      return &t;
    }
  }
};
#undef KILN_SDK_OPTIONAL

template <class T>
constexpr int kindCount() {
  return int(std::is_base_of_v<CodeAgent, T>) + int(std::is_base_of_v<TemplateProvider, T>) +
         int(std::is_base_of_v<GitHost, T>) + int(std::is_base_of_v<CiTrigger, T>) +
         int(std::is_base_of_v<Notifier, T>);
}

template <class T>
struct Plugin {
  static_assert(kindCount<T>() == 1,
                "a plugin class derives from exactly one of CodeAgent, TemplateProvider, "
                "GitHost, CiTrigger, Notifier");
  static_assert(std::is_constructible_v<T, Call&, std::string_view>,
                "a plugin class needs a constructor T(kiln::sdk::Call&, std::string_view config)");

  static kiln_status create(kiln_call* call, kiln_str config, void** instance) noexcept {
    return guard(call, [&](Call c) -> kiln_status {
      if (instance == nullptr)
        throw Error("create called without an out-pointer", KILN_ERR_INTERNAL);
      *instance = new T(c, toView(config));
      return KILN_OK;
    });
  }

  static void destroy(void* instance) noexcept {
    try {
      delete static_cast<T*>(instance);
    } catch (...) {
      // A destructor must not throw across the ABI; nothing left to report to.
    }
  }

  static kiln_plugin_descriptor descriptor() noexcept {
    return kiln_plugin_descriptor{sizeof(kiln_plugin_descriptor),
                                  T::kInfo.flags,
                                  T::kKind,
                                  T::kInfo.id,
                                  T::kInfo.name,
                                  T::kInfo.version,
                                  T::kInfo.description,
                                  T::kInfo.config_schema,
                                  &create,
                                  &destroy,
                                  Tables<T>::table(),
                                  T::kInfo.homepage};
  }
};

template <class... Ts>
struct Library {
  static_assert(sizeof...(Ts) > 0, "a plugin library provides at least one plugin");

  static bool init(const kiln_host* host) noexcept {
    if (host == nullptr || host->struct_size < KILN_HOST_MIN_SIZE) return false;
    hostSlot() = host;
    return true;
  }
  static void deinit() noexcept { hostSlot() = nullptr; }
  static uint32_t count() noexcept { return sizeof...(Ts); }
  static const kiln_plugin_descriptor* get(uint32_t index) noexcept {
    if (hostSlot() == nullptr) return nullptr;  // lifecycle: init() first
    static const std::array<kiln_plugin_descriptor, sizeof...(Ts)> descriptors = {
        Plugin<Ts>::descriptor()...};
    return index < descriptors.size() ? &descriptors[index] : nullptr;
  }
};

}  // namespace detail
}  // namespace kiln::sdk

// Defines the library's entry symbol for the listed plugin classes.
#define KILN_PLUGIN_LIBRARY(library_name, library_version, ...)         \
  extern "C" KILN_EXPORT const kiln_library_entry kiln_plugin_entry = { \
      sizeof(kiln_library_entry),                                       \
      KILN_ABI_VERSION_MAJOR,                                           \
      KILN_ABI_VERSION_MINOR,                                           \
      library_name,                                                     \
      library_version,                                                  \
      &::kiln::sdk::detail::Library<__VA_ARGS__>::init,                 \
      &::kiln::sdk::detail::Library<__VA_ARGS__>::deinit,               \
      &::kiln::sdk::detail::Library<__VA_ARGS__>::count,                \
      &::kiln::sdk::detail::Library<__VA_ARGS__>::get,                  \
  };

#endif  // KILN_SDK_HPP
