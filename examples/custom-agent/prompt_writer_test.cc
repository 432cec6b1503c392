// Unit test of the plugin through the SDK's FakeHost: no Kiln needed.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <kiln/sdk/testing.hpp>
#include <nlohmann/json.hpp>

TEST(PromptWriterTest, WritesThePromptIntoTheWorkspace) {
  const auto dir = std::filesystem::temp_directory_path() / "prompt-writer-test";
  std::filesystem::create_directories(dir);
  kiln::sdk::testing::FakeHost host;
  auto agent = host.create("prompt-writer", R"({"file": "notes/PROMPT.md"})");
  ASSERT_NE(agent, nullptr);
  const nlohmann::json request = {{"workspace", dir.string()}, {"prompt", "add a README"}};
  auto out = agent->call(kiln::sdk::testing::Op::kExecute, request.dump());
  ASSERT_TRUE(out.ok()) << out.error;
  std::ifstream in(dir / "notes/PROMPT.md");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "add a README\n");
  std::filesystem::remove_all(dir);
}

TEST(PromptWriterTest, AMissingWorkspaceIsAnInvalidArgument) {
  kiln::sdk::testing::FakeHost host;
  auto agent = host.create("prompt-writer");
  auto out = agent->call(kiln::sdk::testing::Op::kExecute, R"({"workspace": "/nonexistent/ws"})");
  EXPECT_EQ(out.status, KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(out.error.find("does not exist"), std::string::npos);
}
