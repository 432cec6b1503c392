// notifier/log: writes one line per build event to Kiln's log. The simplest
// way for ops to see every outcome without any delivery infrastructure.
#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

using nlohmann::json;

class LogNotifier : public kiln::sdk::Notifier {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{"log", "Log notifier", "0.1.0",
                                               "Writes one line per build event to the Kiln log.",
                                               R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
          "level": {"enum": ["debug", "info", "warn", "error"], "default": "info"}
        },
        "additionalProperties": false
      })"};

  LogNotifier(kiln::sdk::Call&, std::string_view config) {
    const std::string level = json::parse(config).value("level", "info");
    level_ = level == "debug"   ? KILN_LOG_DEBUG
             : level == "warn"  ? KILN_LOG_WARN
             : level == "error" ? KILN_LOG_ERROR
                                : KILN_LOG_INFO;
  }

  std::string notify(kiln::sdk::Call& call, std::string_view request) override {
    const json req = json::parse(request);
    const json& event = req.at("event");
    const json data = event.value("data", json::object());
    call.log(level_, event.value("type", "event") + " task=" + data.value("task_id", "?") +
                         " project=" + data.value("project_id", "?") +
                         " status=" + data.value("status", "?"));
    return json{{"delivered", true}, {"detail", "written to the kiln log"}}.dump();
  }

 private:
  kiln_log_level level_ = KILN_LOG_INFO;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-notifier-log", "0.1.0", LogNotifier)
