// code-agent/command, loaded from the bundled .so through the registry, with
// the real host services boot() builds: real child processes (the demo
// agent, shell scripts, a fake `claude`) in real temporary workspaces.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "host_services.h"
#include "kiln/plugin.h"
#include "kiln/plugins/registry.h"

#include "eventually.h"

namespace {

namespace fs = std::filesystem;
using kiln::ErrorCode;
using kiln::domain::PluginKind;
using kiln::domain::PluginRef;
using kiln::plugins::CallOptions;
using kiln::plugins::Operation;
using kiln::plugins::PluginInstance;
using kiln::plugins::Registry;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kDemoAgent = KILN_DEMO_AGENT;
const PluginRef kCommand{PluginKind::kCodeAgent, "command"};

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "kiln-agent-XXXXXX").string();
    path_ = fs::path(::mkdtemp(pattern.data())).lexically_normal().string();
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }
  void write(const std::string& rel, const std::string& content) const {
    const fs::path p = fs::path(path_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
  }
  std::string writeScript(const std::string& rel, const std::string& body) const {
    write(rel, body);
    const std::string p = path_ + "/" + rel;
    fs::permissions(p, fs::perms::owner_all);
    return p;
  }
  std::string read(const std::string& rel) const {
    std::ifstream in(fs::path(path_) / rel, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  bool has(const std::string& rel) const { return fs::exists(fs::path(path_) / rel); }
  // Every regular file, relative path -> content.
  std::map<std::string, std::string> tree() const {
    std::map<std::string, std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(path_)) {
      if (e.is_regular_file()) {
        const std::string rel = fs::relative(e.path(), path_).string();
        out[rel] = read(rel);
      }
    }
    return out;
  }

 private:
  std::string path_;
};

// The live (non-zombie) members of a process group, from /proc.
int liveMembers(pid_t pgid) {
  int n = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in(e.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    char state;
    long ppid, pgrp;
    rest >> state >> ppid >> pgrp;
    if (pgrp == pgid && state != 'Z' && state != 'X') ++n;
  }
  return n;
}

using kiln::testing::eventually;

class CommandAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Set before the services snapshot kiln's environment: it must still not leak.
    ::setenv("KILN_TEST_SECRET", "leaked-secret-value", 1);
    auto services = kiln::app::makeHostServices(kiln::config::Config{});
    services.log = [this](kiln::plugins::LogLevel, const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      logs_.push_back(line);
    };
    registry_ = std::make_unique<Registry>(std::move(services));
    auto loaded =
        registry_->loadFile(std::string(KILN_BUNDLED_PLUGIN_DIR) + "/code-agent-command.so");
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  }
  void TearDown() override { ::unsetenv("KILN_TEST_SECRET"); }

  std::shared_ptr<PluginInstance> agent(const json& config) {
    auto created = registry_->create(kCommand, "agent", config);
    EXPECT_TRUE(created.ok()) << (created.ok() ? "" : created.error().message);
    return created.ok() ? created.value() : nullptr;
  }

  json request(const TempDir& ws, const std::string& prompt) const {
    return {{"task_id", "task-42"},       {"project_id", "demo"}, {"workspace", ws.path()},
            {"prompt", prompt},           {"branch", "main"},     {"timeout_ms", 60000},
            {"variables", json::object()}};
  }

  kiln::Result<json> execute(const PluginInstance& inst, const json& req,
                             std::function<bool()> cancelled = {}) {
    CallOptions options;
    options.build_id = "build-1";
    options.is_cancelled = std::move(cancelled);
    options.on_event = [this](int32_t kind, std::string_view payload) {
      std::lock_guard<std::mutex> lock(mu_);
      if (kind == KILN_EVENT_OUTPUT) output_ += payload;
    };
    auto r = inst.invoke(Operation::kExecute, req.dump(), options);
    if (!r.ok()) return r.error();
    return json::parse(*r);
  }

  json mustExecute(const PluginInstance& inst, const json& req) {
    auto r = execute(inst, req);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : json::object();
  }

  std::string streamed() {
    std::lock_guard<std::mutex> lock(mu_);
    return output_;
  }
  std::vector<std::string> logs() {
    std::lock_guard<std::mutex> lock(mu_);
    return logs_;
  }

  std::unique_ptr<Registry> registry_;
  std::mutex mu_;
  std::string output_;
  std::vector<std::string> logs_;
};

const char kEditPrompt[] =
    "Tidy the project.\n"
    "create src/hello.txt\n"
    "Hello, world\n"
    "  indented line\n"
    "end\n"
    "append README.md: Edited by the demo agent.\n"
    "delete obsolete.txt\n";

TEST_F(CommandAgentTest, DemoAgentEditsTheWorkspaceFromStdin) {
  auto inst = agent({{"argv", {kDemoAgent}}});
  ASSERT_TRUE(inst);
  TempDir ws;
  ws.write("README.md", "# Demo\n");
  ws.write("obsolete.txt", "old\n");
  const json result = mustExecute(*inst, request(ws, kEditPrompt));
  EXPECT_EQ(result["success"], true) << result.dump();
  EXPECT_EQ(result["error"], "");
  EXPECT_THAT(result["output"].get<std::string>(), HasSubstr("created src/hello.txt (2 lines)"));
  EXPECT_EQ(result["artifacts"], json::array());
  EXPECT_EQ(result["metadata"]["exit_code"], 0);
  EXPECT_EQ(ws.tree(), (std::map<std::string, std::string>{
                           {"README.md", "# Demo\nEdited by the demo agent.\n"},
                           {"src/hello.txt", "Hello, world\n  indented line\n"}}));
  EXPECT_THAT(streamed(), HasSubstr("demo-agent: deleted obsolete.txt"));

  // Deterministic: the same prompt on the same files gives the same tree.
  TempDir again;
  again.write("README.md", "# Demo\n");
  again.write("obsolete.txt", "old\n");
  mustExecute(*inst, request(again, kEditPrompt));
  EXPECT_EQ(again.tree(), ws.tree());
}

TEST_F(CommandAgentTest, DemoAgentWithoutInstructionsAppendsThePromptsFirstLine) {
  auto inst = agent({{"argv", {kDemoAgent}}});
  ASSERT_TRUE(inst);
  TempDir ws;
  const json result = mustExecute(*inst, request(ws, "\nAdd a changelog entry\nplease\n"));
  EXPECT_EQ(result["success"], true);
  EXPECT_EQ(ws.tree(),
            (std::map<std::string, std::string>{{"KILN_DEMO.md", "- Add a changelog entry\n"}}));
}

TEST_F(CommandAgentTest, PromptAsAnArgument) {
  TempDir ws;
  auto placed = agent({{"argv", {kDemoAgent, "--prompt", "{prompt}"}}, {"prompt_via", "arg"}});
  ASSERT_TRUE(placed);
  EXPECT_EQ(mustExecute(*placed, request(ws, "append notes.txt: from an argument"))["success"],
            true);
  EXPECT_EQ(ws.read("notes.txt"), "from an argument\n");

  // Without {prompt} in argv it is appended as the last argument; stdin is /dev/null.
  auto appended =
      agent({{"argv", {"/bin/sh", "-c", "printf '%s|' \"$1\"; cat", "sh"}}, {"prompt_via", "arg"}});
  ASSERT_TRUE(appended);
  EXPECT_EQ(mustExecute(*appended, request(ws, "a {workspace} prompt"))["output"],
            "a {workspace} prompt|");
}

TEST_F(CommandAgentTest, PromptInAFileThatIsRemovedAfterwards) {
  TempDir ws;
  auto inst =
      agent({{"argv", {kDemoAgent, "--prompt-file", "{prompt_file}"}}, {"prompt_via", "file"}});
  ASSERT_TRUE(inst);
  EXPECT_EQ(mustExecute(*inst, request(ws, "create made.txt\nvia a file\nend\n"))["success"], true);
  EXPECT_EQ(ws.tree(), (std::map<std::string, std::string>{{"made.txt", "via a file\n"}}))
      << "the prompt file and its .kiln folder must not stay in the workspace";

  auto reader = agent(
      {{"argv", {"/bin/sh", "-c", "cat .kiln/prompt.md; echo; echo \"$1\"", "sh", "{prompt_file}"}},
       {"prompt_via", "file"}});
  ASSERT_TRUE(reader);
  EXPECT_EQ(mustExecute(*reader, request(ws, "the prompt"))["output"],
            "the prompt\n" + ws.path() + "/.kiln/prompt.md\n");
  EXPECT_FALSE(ws.has(".kiln"));

  // An existing .kiln folder stays; only the prompt file goes.
  ws.write(".kiln/keep.txt", "mine");
  mustExecute(*reader, request(ws, "x"));
  EXPECT_TRUE(ws.has(".kiln/keep.txt"));
  EXPECT_FALSE(ws.has(".kiln/prompt.md"));
}

TEST_F(CommandAgentTest, PlaceholdersAndWorkingDirectory) {
  TempDir ws;
  auto inst =
      agent({{"argv",
              {"/bin/sh", "-c", "echo \"$1|$2|$(pwd)\"", "sh", "{task_id}", "--dir={workspace}"}}});
  ASSERT_TRUE(inst);
  EXPECT_EQ(mustExecute(*inst, request(ws, "p"))["output"],
            "task-42|--dir=" + ws.path() + "|" + fs::canonical(ws.path()).string() + "\n");
}

TEST_F(CommandAgentTest, EnvironmentIsTheAllowListPlusTheConfig) {
  TempDir ws;
  auto inst = agent({{"argv", {"/usr/bin/env"}}, {"env", {{"AGENT_TOKEN", "tok-123"}}}});
  ASSERT_TRUE(inst);
  const std::string out = mustExecute(*inst, request(ws, "p"))["output"];
  EXPECT_THAT(out, HasSubstr("AGENT_TOKEN=tok-123\n"));
  EXPECT_THAT(out, HasSubstr("KILN_TASK_ID=task-42\n"));
  EXPECT_THAT(out, HasSubstr("KILN_PROJECT_ID=demo\n"));
  EXPECT_THAT(out, HasSubstr("KILN_WORKSPACE=" + ws.path() + "\n"));
  EXPECT_THAT(out, HasSubstr("PATH=" + std::string(::getenv("PATH")) + "\n"));
  EXPECT_THAT(out, Not(HasSubstr("leaked-secret-value")));
  EXPECT_THAT(out, Not(HasSubstr("KILN_TEST_SECRET")));
  const std::set<std::string> allowed = {
      "PATH",         "HOME",        "LANG",           "LC_ALL",         "TZ",
      "TMPDIR",       "USER",        "LOGNAME",        "SHELL",          "AGENT_TOKEN",
      "KILN_TASK_ID", "KILN_BRANCH", "KILN_WORKSPACE", "KILN_PROJECT_ID"};
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(allowed.count(line.substr(0, line.find('=')))) << "unexpected: " << line;
  }
}

TEST_F(CommandAgentTest, NonZeroExitFailsWithTheEndOfStderr) {
  TempDir ws;
  auto inst = agent({{"argv",
                      {"/bin/sh", "-c",
                       "echo working; i=0; while [ $i -lt 50 ]; do echo noise $i >&2; "
                       "i=$((i+1)); done; echo 'fatal: boom' >&2; exit 3"}}});
  ASSERT_TRUE(inst);
  const json r = mustExecute(*inst, request(ws, "p"));
  EXPECT_EQ(r["success"], false);
  const std::string error = r["error"];
  EXPECT_THAT(error, StartsWith("agent exited with status 3"));
  EXPECT_THAT(error, HasSubstr("fatal: boom"));
  EXPECT_THAT(error, HasSubstr("noise 49"));
  EXPECT_THAT(error, Not(HasSubstr("noise 10\n"))) << "only the last lines";
  EXPECT_EQ(r["output"], "working\n");
  EXPECT_EQ(r["metadata"]["exit_code"], 3);

  auto demo = agent({{"argv", {kDemoAgent}}});
  ASSERT_TRUE(demo);
  const json malformed = mustExecute(*demo, request(ws, "create ../escape.txt\nx\nend\n"));
  EXPECT_EQ(malformed["success"], false);
  EXPECT_THAT(malformed["error"].get<std::string>(),
              AllOf(StartsWith("agent exited with status 2"), HasSubstr("leaves the workspace")));
  EXPECT_FALSE(fs::exists(fs::path(ws.path()).parent_path() / "escape.txt"));
}

TEST_F(CommandAgentTest, TimeoutStopsTheAgentAndItsChildren) {
  TempDir ws;
  auto inst =
      agent({{"argv", {"/bin/sh", "-c", "echo $$; sleep 30 & sleep 30"}}, {"timeout_s", 1}});
  ASSERT_TRUE(inst);
  const auto start = Clock::now();
  auto r = execute(*inst, request(ws, "p"));
  EXPECT_LT(Clock::now() - start, 4s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kTimeout);
  EXPECT_THAT(r.error().message, HasSubstr("timed out after 1 s"));
  const pid_t pgid = static_cast<pid_t>(std::stol(streamed()));
  EXPECT_TRUE(eventually([&] { return liveMembers(pgid) == 0; }, 3s)) << "group " << pgid;

  // The build's own limit wins when it is shorter.
  auto long_limit = agent({{"argv", {"/bin/sh", "-c", "sleep 30"}}, {"timeout_s", 600}});
  ASSERT_TRUE(long_limit);
  json req = request(ws, "p");
  req["timeout_ms"] = 300;
  const auto start2 = Clock::now();
  auto r2 = execute(*long_limit, req);
  EXPECT_LT(Clock::now() - start2, 3s);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().code, ErrorCode::kTimeout);
}

TEST_F(CommandAgentTest, CancellationStopsTheAgentWithinTwoSeconds) {
  TempDir ws;
  auto inst = agent({{"argv", {"/bin/sh", "-c", "echo $$; sleep 30"}}});
  ASSERT_TRUE(inst);
  const auto cancel_at = Clock::now() + 400ms;
  auto r = execute(*inst, request(ws, "p"), [&] { return Clock::now() >= cancel_at; });
  EXPECT_LT(Clock::now() - cancel_at, 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCancelled);
  const pid_t pgid = static_cast<pid_t>(std::stol(streamed()));
  EXPECT_TRUE(eventually([&] { return liveMembers(pgid) == 0; }, 3s));
}

TEST_F(CommandAgentTest, AMissingProgramIsReportedAtExecuteNotAtCreate) {
  TempDir ws;
  auto by_path = agent({{"argv", {"/nonexistent/bin/claude", "-p"}}});
  ASSERT_TRUE(by_path) << "create() must not look for the program";
  auto r = execute(*by_path, request(ws, "p"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(r.error().message,
              HasSubstr("cannot run /nonexistent/bin/claude: No such file or directory"));

  auto by_name = agent({{"argv", {"kiln-no-such-agent"}}});
  ASSERT_TRUE(by_name);
  r = execute(*by_name, request(ws, "p"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("cannot run kiln-no-such-agent"));
}

TEST_F(CommandAgentTest, ConfigIsCheckedAtCreate) {
  EXPECT_FALSE(registry_->create(kCommand, "a", json{{"argv", json::array()}}).ok());
  EXPECT_FALSE(registry_->create(kCommand, "a", json::object()).ok());
  EXPECT_FALSE(
      registry_->create(kCommand, "a", json{{"argv", {"x"}}, {"prompt_via", "pipe"}}).ok());
  EXPECT_FALSE(registry_->create(kCommand, "a", json{{"argv", {"x"}}, {"timeout_s", 0}}).ok());
  EXPECT_FALSE(registry_->create(kCommand, "a", json{{"argv", {"x"}}, {"unknown", 1}}).ok());
  auto escaping = registry_->create(kCommand, "a", json{{"argv", {"x"}}, {"prompt_file", "../p"}});
  ASSERT_FALSE(escaping.ok());
  EXPECT_THAT(escaping.error().message, HasSubstr("prompt_file must be a relative path"));
  EXPECT_FALSE(
      registry_->create(kCommand, "a", json{{"argv", {"x"}}, {"artifacts_manifest", "/etc/x"}})
          .ok());
}

// A stand-in for the Claude Code CLI: records its arguments and stdin, and
// prints what FAKE_CLAUDE_MODE asks for, shaped like `claude -p
// --output-format json` (ecosystem-facts.md §1.1).
const char kFakeClaude[] = R"sh(#!/bin/sh
printf '%s\n' "$*" > "$FAKE_CLAUDE_LOG"
cat >> "$FAKE_CLAUDE_LOG"
case "$FAKE_CLAUDE_MODE" in
  success)
    echo '{"type":"result","subtype":"success","is_error":false,"duration_ms":5120,"duration_api_ms":4800,"num_turns":4,"result":"Added the endpoint and its tests.","session_id":"3f1c9a2e-1111-2222-3333-444455556666","total_cost_usd":0.0421,"usage":{"input_tokens":1200,"output_tokens":340},"permission_denials":[],"newer_field":{"x":1}}'
    ;;
  max_turns)
    echo '{"type":"result","subtype":"error_max_turns","is_error":true,"duration_ms":9000,"num_turns":3,"session_id":"s-2","total_cost_usd":0.03,"errors":["Reached maximum number of turns (3)"]}'
    exit 1
    ;;
  is_error_exit0)
    echo '{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 overloaded","session_id":"s-3"}'
    ;;
  stream)
    echo '{"type":"system","subtype":"init","session_id":"s-4","tools":["Read","Edit"]}'
    echo '{"type":"assistant","message":{"content":[{"type":"text","text":"Working"}]}}'
    echo '{"type":"result","subtype":"success","is_error":false,"result":"Streamed and done.","session_id":"s-4"}'
    ;;
  not_json)
    echo "Done, I think."
    ;;
esac
)sh";

TEST_F(CommandAgentTest, ClaudeJsonResultsAreJudgedByIsErrorAndSubtype) {
  TempDir bin, ws;
  bin.writeScript("claude", kFakeClaude);
  const std::string log = bin.path() + "/claude.log";
  auto withMode = [&](const std::string& mode) {
    return agent({{"argv", {"claude", "-p", "--output-format", "json", "--bare"}},
                  {"output_format", "claude-json"},
                  {"env",
                   {{"PATH", bin.path() + ":/usr/bin:/bin"},
                    {"FAKE_CLAUDE_MODE", mode},
                    {"FAKE_CLAUDE_LOG", log}}}});
  };

  auto ok = withMode("success");
  ASSERT_TRUE(ok);
  json r = mustExecute(*ok, request(ws, "Add a /health endpoint"));
  EXPECT_EQ(r["success"], true) << r.dump();
  EXPECT_EQ(r["output"], "Added the endpoint and its tests.");
  EXPECT_EQ(r["error"], "");
  EXPECT_EQ(r["metadata"]["claude"]["session_id"], "3f1c9a2e-1111-2222-3333-444455556666");
  EXPECT_EQ(r["metadata"]["claude"]["num_turns"], 4);
  EXPECT_DOUBLE_EQ(r["metadata"]["claude"]["total_cost_usd"].get<double>(), 0.0421);
  EXPECT_EQ(bin.read("claude.log"), "-p --output-format json --bare\nAdd a /health endpoint");

  auto max_turns = withMode("max_turns");
  ASSERT_TRUE(max_turns);
  r = mustExecute(*max_turns, request(ws, "p"));
  EXPECT_EQ(r["success"], false);
  EXPECT_EQ(r["error"],
            "claude reported error_max_turns: Reached maximum number of turns (3) (exit status 1)");

  auto is_error = withMode("is_error_exit0");
  ASSERT_TRUE(is_error);
  r = mustExecute(*is_error, request(ws, "p"));
  EXPECT_EQ(r["success"], false) << "is_error counts even with exit status 0";
  EXPECT_EQ(r["error"], "claude reported an error: API Error: 529 overloaded");

  auto stream = withMode("stream");
  ASSERT_TRUE(stream);
  r = mustExecute(*stream, request(ws, "p"));
  EXPECT_EQ(r["success"], true);
  EXPECT_EQ(r["output"], "Streamed and done.");

  auto not_json = withMode("not_json");
  ASSERT_TRUE(not_json);
  r = mustExecute(*not_json, request(ws, "p"));
  EXPECT_EQ(r["success"], false);
  EXPECT_THAT(r["error"].get<std::string>(), HasSubstr("no Claude Code result object"));
}

TEST_F(CommandAgentTest, ArtifactsDeclaredInTheManifest) {
  TempDir ws;
  const std::string script =
      "mkdir -p reports .kiln && echo '# Report' > reports/summary.md && "
      "ln -s /etc/hostname link-out && "
      "cat > .kiln/artifacts.json <<'EOF'\n"
      "[{\"name\": \"summary\", \"path\": \"reports/summary.md\"},\n"
      " {\"name\": \"escape\", \"path\": \"../outside.txt\"},\n"
      " {\"name\": \"absolute\", \"path\": \"/etc/hostname\"},\n"
      " {\"name\": \"link\", \"path\": \"link-out\"},\n"
      " {\"name\": \"missing\", \"path\": \"nope.md\"},\n"
      " {\"name\": \"summary\", \"path\": \"reports/summary.md\"},\n"
      " {\"path\": \"no-name\"}]\n"
      "EOF\n";
  auto inst = agent({{"argv", {"/bin/sh", "-c", script}}});
  ASSERT_TRUE(inst);
  const json r = mustExecute(*inst, request(ws, "p"));
  EXPECT_EQ(r["success"], true) << r.dump();
  EXPECT_EQ(r["artifacts"], json::parse(R"([{"name": "summary", "path": "reports/summary.md"}])"));
  EXPECT_FALSE(ws.has(".kiln")) << "the manifest is read, then removed";
  EXPECT_TRUE(ws.has("reports/summary.md"));
  const auto lines = logs();
  auto logged = [&](const std::string& what) {
    return std::any_of(lines.begin(), lines.end(),
                       [&](const std::string& l) { return l.find(what) != std::string::npos; });
  };
  EXPECT_TRUE(logged("ignoring \"escape\": ../outside.txt is outside the workspace"));
  EXPECT_TRUE(logged("ignoring \"absolute\": /etc/hostname is outside the workspace"));
  EXPECT_TRUE(logged("ignoring \"link\": link-out is outside the workspace"));
  EXPECT_TRUE(logged("ignoring \"missing\": no file at nope.md"));
  EXPECT_TRUE(logged("ignoring a second artifact named \"summary\""));

  // A manifest already in the repository, unchanged by the run, declares nothing.
  ws.write(".kiln/artifacts.json", R"([{"name": "old", "path": "reports/summary.md"}])");
  auto quiet = agent({{"argv", {"/bin/true"}}});
  ASSERT_TRUE(quiet);
  EXPECT_EQ(mustExecute(*quiet, request(ws, "p"))["artifacts"], json::array());
  EXPECT_TRUE(ws.has(".kiln/artifacts.json")) << "a file of the repository stays";
}

}  // namespace
