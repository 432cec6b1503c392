// code-agent/noop: an agent that changes nothing. It reports what it was
// asked, optionally after a delay during which it honours cancellation.
// Used for smoke tests and for measuring Kiln's own overhead (bench/).
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

using nlohmann::json;

class NoopAgent : public kiln::sdk::CodeAgent {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "noop", "No-op agent", "0.1.0",
      "Changes nothing and succeeds; reports the prompt it was given. For smoke tests and "
      "benchmarks.",
      R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
          "delay_ms": {"type": "integer", "minimum": 0, "maximum": 3600000, "default": 0,
                       "description": "Wait this long before answering (cancellable)."},
          "succeed": {"type": "boolean", "default": true,
                      "description": "Answer success (true) or a failed attempt (false)."}
        },
        "additionalProperties": false
      })"};

  NoopAgent(kiln::sdk::Call&, std::string_view config) {
    const json c = json::parse(config);
    delay_ms_ = c.value("delay_ms", 0);
    succeed_ = c.value("succeed", true);
  }

  std::string execute(kiln::sdk::Call& call, std::string_view request) override {
    const json req = json::parse(request);
    const std::string prompt = req.value("prompt", "");
    call.progress("noop agent started");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(delay_ms_);
    while (std::chrono::steady_clock::now() < deadline) {
      call.throwIfCancelled();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::string summary = "noop agent: received a prompt of " +
                                std::to_string(prompt.size()) + " bytes; changed nothing";
    call.output(summary + "\n");
    json result = {{"success", succeed_}, {"output", summary}, {"artifacts", json::array()}};
    if (!succeed_) result["error"] = "noop agent configured to fail";
    return result.dump();
  }

 private:
  int delay_ms_ = 0;
  bool succeed_ = true;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-code-agent-noop", "0.1.0", NoopAgent)
