// A fake Kiln host for plugin authors' unit tests: drives a plugin library
// through the real C ABI (init, descriptors, create, the kind tables) without
// Kiln, records what the plugin logs and emits, and lets the test script the
// host services.
//
//   #include "kiln/sdk/testing.hpp"
//   kiln::sdk::testing::FakeHost host;              // uses kiln_plugin_entry
//   host.secrets["token"] = "t0k";
//   auto agent = host.create("my-agent", R"({"model": "x"})");
//   auto out = agent->call(kiln::sdk::testing::Op::kExecute, R"({"prompt": "hi"})");
//   EXPECT_TRUE(out.ok()) << out.error;
//
// It enforces the contract the way Kiln does: a failure without a message and
// a success without a result are reported as plugin bugs in Outcome::error.
// Header-only, C++17, no dependency beyond the standard library.
#ifndef KILN_SDK_TESTING_HPP
#define KILN_SDK_TESTING_HPP

#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kiln/plugin.h"

namespace kiln::sdk::testing {

// The outcome of one call into the plugin.
struct Outcome {
  kiln_status status = KILN_OK;
  std::string result;  // the result document on success
  std::string error;   // the plugin's message on failure
  bool retryable = false;
  bool ok() const { return status == KILN_OK; }
};

enum class Op {
  kExecute,
  kRender,
  kList,
  kCredentials,
  kCreateRepository,
  kOpenChangeRequest,
  kTrigger,
  kStatus,
  kNotify
};

// What a scripted host service answers: a status and, on KILN_OK, the document.
using ServiceReply = std::pair<kiln_status, std::string>;

class FakeHost {
 public:
  struct Event {
    kiln_event_kind kind;
    std::string payload;
  };
  struct LogLine {
    kiln_log_level level;
    std::string message;
  };

  // Scriptable services. Unset http/process answer KILN_ERR_UNAVAILABLE.
  std::map<std::string, std::string> secrets;
  std::function<ServiceReply(std::string_view request_json)> http;
  std::function<ServiceReply(std::string_view request_json)> process;
  std::atomic<bool> cancelled{false};

  // Loads the library described by `entry` (usually the one compiled into
  // the test: kiln_plugin_entry). Throws std::runtime_error if the ABI does
  // not match or init() fails.
  explicit FakeHost(const kiln_library_entry& entry = kiln_plugin_entry) : entry_(entry) {
    if (entry_.abi_major != KILN_ABI_VERSION_MAJOR || entry_.abi_minor > KILN_ABI_VERSION_MINOR) {
      throw std::runtime_error("plugin ABI " + std::to_string(entry_.abi_major) + "." +
                               std::to_string(entry_.abi_minor) + " does not match the SDK's");
    }
    host_.struct_size = sizeof(kiln_host);
    host_.abi_major = KILN_ABI_VERSION_MAJOR;
    host_.abi_minor = KILN_ABI_VERSION_MINOR;
    host_.host_name = "kiln-fake-host";
    host_.host_version = "0.0.0";
    host_.host_data = this;
    host_.log = &FakeHost::hostLog;
    host_.emit = &FakeHost::hostEmit;
    host_.is_cancelled = &FakeHost::hostIsCancelled;
    host_.set_error = &FakeHost::hostSetError;
    host_.set_result = &FakeHost::hostSetResult;
    host_.get_secret = &FakeHost::hostGetSecret;
    host_.http_request = &FakeHost::hostHttp;
    host_.run_process = &FakeHost::hostProcess;
    host_.get_extension = [](const kiln_host*, const char*) -> const void* { return nullptr; };
    if (!entry_.init(&host_)) throw std::runtime_error("the plugin's init() returned false");
  }

  ~FakeHost() { entry_.deinit(); }
  FakeHost(const FakeHost&) = delete;
  FakeHost& operator=(const FakeHost&) = delete;

  const kiln_host* table() const { return &host_; }

  // Everything the plugin logged or emitted so far (thread-safe copies).
  std::vector<LogLine> logs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return logs_;
  }
  std::vector<Event> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

  // The descriptor of plugin `id`, or nullptr.
  const kiln_plugin_descriptor* find(std::string_view id) const {
    for (uint32_t i = 0; i < entry_.plugin_count(); ++i) {
      const kiln_plugin_descriptor* d = entry_.get_plugin(i);
      if (d != nullptr && id == d->id) return d;
    }
    return nullptr;
  }

  class Instance {
   public:
    ~Instance() {
      if (handle_ != nullptr) descriptor_->destroy(handle_);
    }
    Instance(const Instance&) = delete;
    Instance& operator=(const Instance&) = delete;

    const kiln_plugin_descriptor& descriptor() const { return *descriptor_; }

    // True when the plugin provides `op` (optional functions may be NULL).
    bool supports(Op op) const { return function(op) != nullptr; }

    Outcome call(Op op, std::string_view request_json) {
      auto fn = function(op);
      if (fn == nullptr) {
        return Outcome{KILN_ERR_UNSUPPORTED, "", "operation not provided by this plugin", false};
      }
      return host_->run(
          [&](kiln_call* c) {
            return fn(handle_, c, kiln_str{request_json.data(), request_json.size()});
          },
          /*expect_result=*/true);
    }

   private:
    friend class FakeHost;
    Instance(FakeHost* host, const kiln_plugin_descriptor* d, void* handle)
        : host_(host), descriptor_(d), handle_(handle) {}

    using Fn = kiln_status (*)(void*, kiln_call*, kiln_str);
    Fn function(Op op) const {
      const std::string_view kind = descriptor_->kind;
      const void* t = descriptor_->table;
      switch (op) {
        case Op::kExecute:
          return kind == KILN_KIND_CODE_AGENT_V1
                     ? static_cast<const kiln_code_agent_v1*>(t)->execute
                     : nullptr;
        case Op::kRender:
        case Op::kList: {
          if (kind != KILN_KIND_TEMPLATE_PROVIDER_V1) return nullptr;
          auto* tt = static_cast<const kiln_template_provider_v1*>(t);
          return op == Op::kRender ? tt->render : within(tt, &tt->list) ? tt->list : nullptr;
        }
        case Op::kCredentials:
        case Op::kCreateRepository:
        case Op::kOpenChangeRequest: {
          if (kind != KILN_KIND_GIT_HOST_V1) return nullptr;
          auto* tt = static_cast<const kiln_git_host_v1*>(t);
          if (op == Op::kCredentials) return tt->credentials;
          if (op == Op::kCreateRepository) {
            return within(tt, &tt->create_repository) ? tt->create_repository : nullptr;
          }
          return within(tt, &tt->open_change_request) ? tt->open_change_request : nullptr;
        }
        case Op::kTrigger:
        case Op::kStatus: {
          if (kind != KILN_KIND_CI_TRIGGER_V1) return nullptr;
          auto* tt = static_cast<const kiln_ci_trigger_v1*>(t);
          return op == Op::kTrigger ? tt->trigger : within(tt, &tt->status) ? tt->status : nullptr;
        }
        case Op::kNotify:
          return kind == KILN_KIND_NOTIFIER_V1 ? static_cast<const kiln_notifier_v1*>(t)->notify
                                               : nullptr;
      }
      return nullptr;
    }

    // Whether `member` lies within the table's declared struct_size.
    template <class Table, class Member>
    static bool within(const Table* table, const Member* member) {
      const size_t end = static_cast<size_t>(reinterpret_cast<const char*>(member + 1) -
                                             reinterpret_cast<const char*>(table));
      return end <= table->struct_size;
    }

    FakeHost* host_;
    const kiln_plugin_descriptor* descriptor_;
    void* handle_;
  };

  // Creates an instance of plugin `id`. On failure returns nullptr and, when
  // `failure` is given, stores why.
  std::unique_ptr<Instance> create(std::string_view id, std::string_view config_json = "{}",
                                   Outcome* failure = nullptr) {
    const kiln_plugin_descriptor* d = find(id);
    if (d == nullptr) {
      if (failure) *failure = Outcome{KILN_ERR_NOT_FOUND, "", "no plugin with this id", false};
      return nullptr;
    }
    void* handle = nullptr;
    Outcome out = run(
        [&](kiln_call* c) {
          return d->create(c, kiln_str{config_json.data(), config_json.size()}, &handle);
        },
        /*expect_result=*/false);
    if (out.ok() && handle == nullptr) {
      out = Outcome{KILN_ERR_INTERNAL, "", "plugin bug: create() succeeded without an instance",
                    false};
    }
    if (!out.ok()) {
      if (handle != nullptr) d->destroy(handle);
      if (failure) *failure = out;
      return nullptr;
    }
    return std::unique_ptr<Instance>(new Instance(this, d, handle));
  }

 private:
  struct FakeCall {
    FakeHost* host = nullptr;
    bool has_result = false;
    std::string result;
    bool error_set = false;
    kiln_status error_code = KILN_OK;
    bool retryable = false;
    std::string error;
    std::deque<std::string> arena;
  };

  static FakeCall* of(kiln_call* c) { return reinterpret_cast<FakeCall*>(c); }
  static std::string text(kiln_str s) { return s.size ? std::string(s.data, s.size) : ""; }

  template <class Fn>
  Outcome run(Fn&& fn, bool expect_result) {
    FakeCall call;
    call.host = this;
    const kiln_status st = fn(reinterpret_cast<kiln_call*>(&call));
    Outcome out;
    out.status = st;
    if (st != KILN_OK) {
      out.retryable = call.retryable;
      out.error = call.error_set && !call.error.empty()
                      ? call.error
                      : "plugin bug: failed with status " + std::to_string(st) +
                            " without an error message";
    } else if (expect_result && !call.has_result) {
      out.status = KILN_ERR_INTERNAL;
      out.error = "plugin bug: succeeded without a result";
    } else {
      out.result = call.result;
    }
    return out;
  }

  static kiln_str keep(FakeCall* c, std::string value) {
    c->arena.push_back(std::move(value));
    return kiln_str{c->arena.back().data(), c->arena.back().size()};
  }

  static void hostLog(const kiln_host* h, kiln_call*, kiln_log_level level, kiln_str message) {
    auto* self = static_cast<FakeHost*>(h->host_data);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->logs_.push_back(LogLine{level, text(message)});
  }
  static void hostEmit(kiln_call* c, kiln_event_kind kind, kiln_str payload) {
    FakeHost* self = of(c)->host;
    std::lock_guard<std::mutex> lock(self->mu_);
    self->events_.push_back(Event{kind, text(payload)});
  }
  static bool hostIsCancelled(kiln_call* c) { return of(c)->host->cancelled.load(); }
  static void hostSetError(kiln_call* c, kiln_status code, bool retryable, kiln_str message) {
    FakeCall* call = of(c);
    call->error_set = true;
    call->error_code = code;
    call->retryable = retryable;
    call->error = text(message);
  }
  static kiln_status hostSetResult(kiln_call* c, kiln_str json) {
    of(c)->has_result = true;
    of(c)->result = text(json);
    return KILN_OK;
  }
  static kiln_status hostGetSecret(kiln_call* c, kiln_str name, kiln_str* value) {
    FakeHost* self = of(c)->host;
    const auto it = self->secrets.find(text(name));
    if (it == self->secrets.end()) return KILN_ERR_NOT_FOUND;
    *value = keep(of(c), it->second);
    return KILN_OK;
  }
  static kiln_status service(kiln_call* c, const std::function<ServiceReply(std::string_view)>& f,
                             kiln_str request, kiln_str* out) {
    if (!f) {
      hostSetError(c, KILN_ERR_UNAVAILABLE, false, kiln_str{"not scripted in FakeHost", 24});
      return KILN_ERR_UNAVAILABLE;
    }
    ServiceReply reply = f(text(request));
    if (reply.first != KILN_OK) {
      const std::string msg = reply.second.empty() ? "scripted failure" : reply.second;
      hostSetError(c, reply.first, false, kiln_str{msg.data(), msg.size()});
      return reply.first;
    }
    *out = keep(of(c), std::move(reply.second));
    return KILN_OK;
  }
  static kiln_status hostHttp(kiln_call* c, kiln_str request, kiln_str* response) {
    return service(c, of(c)->host->http, request, response);
  }
  static kiln_status hostProcess(kiln_call* c, kiln_str request, kiln_str* result) {
    return service(c, of(c)->host->process, request, result);
  }

  const kiln_library_entry& entry_;
  kiln_host host_{};
  mutable std::mutex mu_;
  std::vector<LogLine> logs_;
  std::vector<Event> events_;
};

}  // namespace kiln::sdk::testing

#endif  // KILN_SDK_TESTING_HPP
