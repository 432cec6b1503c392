// code-agent/prompt-writer: a tiny agent that writes the prompt it receives
// into a file of the workspace. A template for your own agent plugin.
#include <filesystem>
#include <fstream>

#include <kiln/sdk.hpp>
#include <nlohmann/json.hpp>

namespace {

using nlohmann::json;

class PromptWriter : public kiln::sdk::CodeAgent {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "prompt-writer", "Prompt writer", "1.0.0",
      "Writes the prompt into a file of the workspace (an example plugin).",
      R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
          "file": {"type": "string", "pattern": "^[^/]", "default": "PROMPT.md",
                   "description": "Path inside the workspace to write."}
        },
        "additionalProperties": false
      })"};

  PromptWriter(kiln::sdk::Call&, std::string_view config)
      : file_(json::parse(config).value("file", "PROMPT.md")) {}

  std::string execute(kiln::sdk::Call& call, std::string_view request) override {
    const json req = json::parse(request);
    const std::filesystem::path workspace = req.at("workspace").get<std::string>();
    if (!std::filesystem::is_directory(workspace)) {
      throw kiln::sdk::Error("workspace " + workspace.string() + " does not exist",
                             KILN_ERR_INVALID_ARGUMENT);
    }
    call.throwIfCancelled();
    const std::filesystem::path target = workspace / file_;
    std::filesystem::create_directories(target.parent_path());
    std::ofstream(target) << req.value("prompt", "") << "\n";
    call.output("wrote " + file_ + "\n");
    return json{{"success", true}, {"output", "wrote the prompt to " + file_}}.dump();
  }

 private:
  std::string file_;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-example-custom-agent", "1.0.0", PromptWriter)
