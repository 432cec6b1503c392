// The out-of-tree example plugin, built against the installed SDK package by
// build_example_plugin.sh, loads into the host and runs.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln/plugins/registry.h"

namespace {

TEST(ExamplePluginTest, LoadsAndWritesThePrompt) {
  const std::string library = std::string(KILN_EXAMPLE_BUILD_DIR) + "/prompt-writer.so";
  kiln::plugins::Registry registry;
  auto loaded = registry.loadFile(library);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const kiln::domain::PluginRef ref{kiln::domain::PluginKind::kCodeAgent, "prompt-writer"};
  ASSERT_NE(registry.find(ref), nullptr);
  EXPECT_EQ(registry.find(ref)->library_name, "kiln-example-custom-agent");

  auto agent = registry.create(ref, "example", nlohmann::json::object());
  ASSERT_TRUE(agent.ok()) << agent.error().message;
  const auto workspace = std::filesystem::temp_directory_path() / "kiln-example-plugin-test";
  std::filesystem::create_directories(workspace);
  const nlohmann::json request = {{"workspace", workspace.string()}, {"prompt", "hello"}};
  auto result = (*agent)->invoke(kiln::plugins::Operation::kExecute, request.dump());
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(nlohmann::json::parse(result.value())["success"], true);
  std::ifstream in(workspace / "PROMPT.md");  // the schema default reached the plugin
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "hello\n");
  std::filesystem::remove_all(workspace);
}

}  // namespace
