// ci-trigger/log: for projects without CI. Records in the build log which
// commit a pipeline would have been started for, and starts nothing.
#include <atomic>

#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

using nlohmann::json;

class LogCiTrigger : public kiln::sdk::CiTrigger {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "log", "No CI (log only)", "0.1.0",
      "Starts no pipeline; writes the commit that would have been built to the build log.",
      R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
          "message": {"type": "string", "default": "no CI configured",
                      "description": "Text written next to the commit."}
        },
        "additionalProperties": false
      })"};

  LogCiTrigger(kiln::sdk::Call&, std::string_view config)
      : message_(json::parse(config).value("message", "no CI configured")) {}

  std::string trigger(kiln::sdk::Call& call, std::string_view request) override {
    const json req = json::parse(request);
    const std::string sha = req.value("commit_sha", "");
    if (sha.empty()) throw kiln::sdk::Error("commit_sha is required", KILN_ERR_INVALID_ARGUMENT);
    const std::string line =
        message_ + ": " + req.value("repo_url", "?") + " " + req.value("branch", "?") + " @ " + sha;
    call.info(line);
    call.output(line + "\n");
    return json{{"run_id", "log-" + std::to_string(++runs_)}, {"status", "success"}}.dump();
  }

  std::string status(kiln::sdk::Call&, std::string_view request) override {
    const json req = json::parse(request);
    if (req.value("run_id", "").rfind("log-", 0) != 0) {
      throw kiln::sdk::Error("unknown run_id", KILN_ERR_NOT_FOUND);
    }
    return json{{"status", "success"}}.dump();
  }

 private:
  std::string message_;
  std::atomic<long> runs_{0};
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-ci-trigger-log", "0.1.0", LogCiTrigger)
