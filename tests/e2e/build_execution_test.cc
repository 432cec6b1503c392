// Build execution end to end: `kiln serve` on each store, real git
// repositories (local and over smart HTTP with a token), real agent child
// processes through the command agent, inspected with the git CLI.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "git_http_server.h"
#include "kiln_server.h"
#include "subprocess.h"

namespace {

namespace fs = std::filesystem;
using kiln::testing::GitHttpServer;
using kiln::testing::KilnServer;
using kiln::testing::TestDatabase;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kKiln = KILN_BINARY;

std::string git(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/git"};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = kiln::testing::run(argv);
  EXPECT_EQ(r.code, 0) << r.err;
  std::string out = r.out;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Everything the server wrote below `dir`, concatenated (to look for a secret).
std::string allFilesBelow(const std::string& dir) {
  std::string all;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) all += slurp(e.path().string());
  }
  return all;
}

class BuildExecutionTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Starts kiln with `extra` appended to a config whose store is this
  // test's; {REPOS} in `extra` is the folder for local repositories.
  void start(const std::string& extra, const std::string& server_extra = "") {
    std::string store;
    if (GetParam() == "postgres") {
      db_ = std::make_unique<TestDatabase>();
      store = "store:\n  postgres:\n    url: " + db_->url() + "\n";
    } else {
      store = "store:\n  sqlite:\n    path: kiln.db\n";
    }
    server_ = std::make_unique<KilnServer>(kKiln, R"(server:
  listen: 127.0.0.1:0
  workers: 2
  lease_s: 3
  shutdown_grace_s: 2
  max_attempts: 2
)" + server_extra + store + extra);
  }

  std::string submit(const std::string& project, const json& spec) {
    const auto r = server_->post("/projects/" + project + "/builds", spec);
    EXPECT_EQ(r.status, 202) << r.body;
    return r.status == 202 ? json::parse(r.body)["task_id"].get<std::string>() : "";
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<KilnServer> server_;
};

// A project on a local bare repository whose main has one commit.
std::string seededRepository(const std::string& path) {
  kiln::testing::makeBareRepository(path);
  const std::string work = path + ".seed";
  git({"clone", "--quiet", path, work});
  std::ofstream(work + "/README.md") << "# demo\n";
  git({"-C", work, "add", "README.md"});
  git({"-C", work, "-c", "user.name=Seed", "-c", "user.email=seed@example", "commit", "--quiet",
       "-m", "seed"});
  git({"-C", work, "push", "--quiet", "origin", "HEAD:main"});
  fs::remove_all(work);
  return path;
}

const char kDemoAgent[] = R"(
instances:
  demo:
    plugin: code-agent/command
    config:
      argv: ["${KILN_AGENT_DIR}/demo-agent"]
  templates:
    plugin: template-provider/filesystem
    config:
      directories: ["${KILN_TEMPLATE_DIR}"]
  local-git:
    plugin: git-host/local
    config:
      root: "${KILN_CONFIG_DIR}/repos"
  log:
    plugin: notifier/log
defaults:
  agent: demo
  template_provider: templates
  git_host: local-git
  notifiers: [log]
)";

TEST_P(BuildExecutionTest, ABuildBecomesACommitPushedToTheRepository) {
  start(std::string(kDemoAgent) +
        "projects:\n  demo:\n    repo_url: ${KILN_CONFIG_DIR}/repos/demo.git\n");
  const std::string bare = seededRepository(server_->dir() + "/repos/demo.git");
  const std::string id =
      submit("demo", {{"prompt", "create docs/HELLO.md\nHello from Kiln\nend\ndelete README.md"},
                      {"auto_commit", true},
                      {"auto_push", true},
                      {"commit_message", "Add a greeting"}});
  const json build = server_->waitForTerminal(id, 60000);
  ASSERT_EQ(build["status"], "completed") << build.dump(2) << "\n"
                                          << server_->get("/builds/" + id + "/log").body;
  const std::string sha = build["result"]["commit_sha"];
  EXPECT_EQ(sha, git({"--git-dir", bare, "rev-parse", "main"}));
  EXPECT_EQ(sha.size(), 40u);
  EXPECT_EQ(build["result"]["files_changed"],
            json::parse(R"([{"path": "README.md", "change": "deleted"},
                            {"path": "docs/HELLO.md", "change": "added"}])"));
  EXPECT_EQ(git({"--git-dir", bare, "show", "main:docs/HELLO.md"}), "Hello from Kiln");
  const std::string message = git({"--git-dir", bare, "log", "-1", "--format=%B", "main"});
  EXPECT_THAT(message, HasSubstr("Add a greeting"));
  EXPECT_THAT(message, HasSubstr("Kiln-Task: " + id));
  EXPECT_EQ(git({"--git-dir", bare, "log", "-1", "--format=%an <%ae>", "main"}),
            "Kiln <kiln@localhost>");

  const auto log = server_->get("/builds/" + id + "/log");
  EXPECT_EQ(log.status, 200);
  EXPECT_THAT(log.body, HasSubstr("cloning"));
  EXPECT_THAT(log.body, HasSubstr("pushed " + sha));
}

TEST_P(BuildExecutionTest, TemplatesRenderAndThePushCanGoToATaskBranch) {
  start(std::string(kDemoAgent) +
        "projects:\n  demo:\n    repo_url: ${KILN_CONFIG_DIR}/repos/demo.git\n    "
        "push_to_task_branch: true\n");
  const std::string bare = seededRepository(server_->dir() + "/repos/demo.git");
  const std::string id = submit("demo", {{"prompt", "p"},
                                         {"template", "feature"},
                                         {"variables", {{"feature", "dark mode"}}},
                                         {"auto_commit", true},
                                         {"auto_push", true}});
  const json build = server_->waitForTerminal(id, 60000);
  ASSERT_EQ(build["status"], "completed") << build.dump(2);
  EXPECT_EQ(git({"--git-dir", bare, "rev-parse", "kiln/" + id}), build["result"]["commit_sha"]);
  EXPECT_EQ(git({"--git-dir", bare, "log", "-1", "--format=%s", "main"}), "seed")
      << "main untouched";
  // The demo agent appends the prompt's first line: the rendered template's.
  EXPECT_THAT(git({"--git-dir", bare, "show", "kiln/" + id + ":KILN_DEMO.md"}),
              HasSubstr("You are working in the repository of project demo"));
}

TEST_P(BuildExecutionTest, ABuildOnANewBranchStartsItFromTheDefaultBranch) {
  start(std::string(kDemoAgent) +
            "projects:\n  demo:\n    repo_url: ${KILN_CONFIG_DIR}/repos/demo.git\n",
        "  git_author_name: Build Bot\n  git_author_email: bot@example.com\n");
  const std::string bare = seededRepository(server_->dir() + "/repos/demo.git");
  const std::string seed = git({"--git-dir", bare, "rev-parse", "main"});
  const json build =
      server_->waitForTerminal(submit("demo", {{"prompt", "append README.md: on a branch"},
                                               {"branch", "feature/x"},
                                               {"auto_commit", true},
                                               {"auto_push", true}}),
                               60000);
  ASSERT_EQ(build["status"], "completed") << build.dump(2);
  EXPECT_EQ(git({"--git-dir", bare, "rev-parse", "feature/x"}), build["result"]["commit_sha"]);
  EXPECT_EQ(git({"--git-dir", bare, "rev-parse", "feature/x~1"}), seed) << "branched from main";
  EXPECT_EQ(git({"--git-dir", bare, "rev-parse", "main"}), seed) << "main untouched";
  EXPECT_EQ(git({"--git-dir", bare, "log", "-1", "--format=%an <%ae>", "feature/x"}),
            "Build Bot <bot@example.com>");
}

TEST_P(BuildExecutionTest, WithoutAutoCommitTheChangesAreReportedButNotCommitted) {
  start(std::string(kDemoAgent) +
        "projects:\n  demo:\n    repo_url: ${KILN_CONFIG_DIR}/repos/demo.git\n");
  const std::string bare = seededRepository(server_->dir() + "/repos/demo.git");
  const std::string before = git({"--git-dir", bare, "rev-parse", "main"});
  const json build =
      server_->waitForTerminal(submit("demo", {{"prompt", "append README.md: more"}}), 60000);
  ASSERT_EQ(build["status"], "completed") << build.dump(2);
  EXPECT_EQ(build["result"]["commit_sha"], "");
  EXPECT_EQ(build["result"]["files_changed"],
            json::parse(R"([{"path": "README.md", "change": "modified"}])"));
  EXPECT_EQ(git({"--git-dir", bare, "rev-parse", "main"}), before);
}

TEST_P(BuildExecutionTest, AgentFailuresTimeoutsAndCancellation) {
  start(R"(
instances:
  failing:
    plugin: code-agent/command
    config:
      argv: ["sh", "-c", "echo broken tool >&2; exit 3"]
  sleepy:
    plugin: code-agent/command
    config:
      # Records its own pid and its child's where the test can read them.
      argv: ["sh", "-c", "echo $$ > \"$PIDS/$KILN_TASK_ID\"; sleep 300 & echo $! >> \"$PIDS/$KILN_TASK_ID\"; wait"]
      prompt_via: arg
      env:
        PIDS: "${KILN_CONFIG_DIR}"
projects:
  failing:
    repo_url: ${KILN_CONFIG_DIR}/repos/a.git
    agent: failing
  sleepy:
    repo_url: ${KILN_CONFIG_DIR}/repos/b.git
    agent: sleepy
)");
  seededRepository(server_->dir() + "/repos/a.git");
  seededRepository(server_->dir() + "/repos/b.git");

  const json failed = server_->waitForTerminal(submit("failing", {{"prompt", "p"}}), 60000);
  EXPECT_EQ(failed["status"], "failed");
  EXPECT_EQ(failed["error_kind"], "workload");
  EXPECT_THAT(failed["error"].get<std::string>(), HasSubstr("3"));
  EXPECT_THAT(failed["error"].get<std::string>(), HasSubstr("broken tool"));

  const json timed_out =
      server_->waitForTerminal(submit("sleepy", {{"prompt", "p"}, {"timeout_s", 2}}), 60000);
  EXPECT_EQ(timed_out["status"], "failed");
  EXPECT_EQ(timed_out["error_kind"], "timeout");

  const std::string id = submit("sleepy", {{"prompt", "p"}});
  server_->waitForStatus(id, "running");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the agent has started
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(server_->post("/builds/" + id + "/cancel", json::object()).status, 202);
  const json cancelled = server_->waitForTerminal(id, 10000);
  EXPECT_EQ(cancelled["status"], "cancelled");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  // No process of either sleepy agent (the shell and its `sleep 300`)
  // outlives its build.
  for (const std::string& task : {timed_out["task_id"].get<std::string>(), id}) {
    std::ifstream pids(server_->dir() + "/" + task);
    int pid = 0, seen = 0;
    while (pids >> pid) {
      ++seen;
      const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
      // Gone, or a zombie waiting for init to reap it: not running.
      const auto state = stat.find(") ");
      EXPECT_TRUE(stat.empty() || (state != std::string::npos && stat[state + 2] == 'Z'))
          << "process " << pid << " of build " << task << " still runs: " << stat;
    }
    EXPECT_EQ(seen, 2) << "the agent of " << task << " recorded its pids";
  }
}

TEST_P(BuildExecutionTest, ANonFastForwardPushFailsWithTheServersReason) {
  start(R"(
instances:
  racer:
    plugin: code-agent/command
    config:
      # Someone else pushes to main while the agent works.
      argv: ["sh", "-c", "echo change > mine.txt && git clone -q \"$KILN_TEST_REMOTE\" other && cd other && echo theirs > theirs.txt && git add theirs.txt && git -c user.name=x -c user.email=x@x commit -qm theirs && git push -q origin HEAD:main && cd .. && rm -rf other"]
      env:
        KILN_TEST_REMOTE: "${KILN_CONFIG_DIR}/repos/race.git"
projects:
  race:
    repo_url: ${KILN_CONFIG_DIR}/repos/race.git
    agent: racer
)");
  seededRepository(server_->dir() + "/repos/race.git");
  const json build = server_->waitForTerminal(
      submit("race", {{"prompt", "p"}, {"auto_commit", true}, {"auto_push", true}}), 60000);
  EXPECT_EQ(build["status"], "failed") << build.dump(2);
  EXPECT_EQ(build["error_kind"], "workload");
  EXPECT_THAT(build["error"].get<std::string>(), HasSubstr("rejected"));
  EXPECT_THAT(build["error"].get<std::string>(), HasSubstr("non-fast-forward"));
}

TEST_P(BuildExecutionTest, AnUnreachableRepositoryIsAnInfrastructureFailureAfterRetries) {
  start(std::string(kDemoAgent) +
        "projects:\n  gone:\n    repo_url: http://127.0.0.1:1/gone.git\n");
  const json build = server_->waitForTerminal(submit("gone", {{"prompt", "p"}}), 60000);
  EXPECT_EQ(build["status"], "failed") << build.dump(2);
  EXPECT_EQ(build["error_kind"], "infrastructure");
  EXPECT_EQ(build["attempts"], 2) << "retried up to server.max_attempts";
  EXPECT_THAT(build["error"].get<std::string>(), HasSubstr("cannot check out the repository"));
}

TEST_P(BuildExecutionTest, ArtifactsTheAgentDeclaresAreKeptAndServed) {
  start(R"(
instances:
  reporter:
    plugin: code-agent/command
    config:
      argv: ["sh", "-c", "mkdir -p .kiln out && echo 'all good' > report.txt && echo '<testsuite/>' > out/junit.xml && echo '[{\"name\": \"report.txt\", \"path\": \"report.txt\"}]' > .kiln/artifacts.json"]
projects:
  rep:
    repo_url: ${KILN_CONFIG_DIR}/repos/rep.git
    agent: reporter
    artifacts: ["out/*.xml"]
)");
  seededRepository(server_->dir() + "/repos/rep.git");
  const std::string id = submit("rep", {{"prompt", "p"}});
  const json build = server_->waitForTerminal(id, 60000);
  ASSERT_EQ(build["status"], "completed") << build.dump(2);
  ASSERT_EQ(build["result"]["artifacts"].size(), 2u) << "declared, plus the project's glob";
  EXPECT_EQ(build["result"]["artifacts"][0]["name"], "report.txt");
  EXPECT_EQ(build["result"]["artifacts"][1]["name"], "junit.xml");
  EXPECT_EQ(server_->get("/builds/" + id + "/artifacts/junit.xml").body, "<testsuite/>\n");
  const auto artifact = server_->get("/builds/" + id + "/artifacts/report.txt");
  EXPECT_EQ(artifact.status, 200);
  EXPECT_EQ(artifact.body, "all good\n");
  EXPECT_EQ(server_->get("/builds/" + id + "/artifacts/other.txt").status, 404);
}

TEST_P(BuildExecutionTest, SmartHttpPushWithATokenThatNeverLeaks) {
  GitHttpServer remote;
  const std::string url = remote.createRepository("web");
  setenv("KILN_TEST_GIT_TOKEN", remote.token().c_str(), 1);
  start(R"(
instances:
  snoop:
    plugin: code-agent/command
    config:
      # Records what the agent can see: its environment and arguments.
      argv: ["sh", "-c", "env > seen-env.txt; echo \"$@\" > seen-args.txt; echo change > change.txt; env", "agent"]
  https-git:
    plugin: git-host/generic
    config:
      username: x-access-token
      token: ${KILN_TEST_GIT_TOKEN}
  wrong-git:
    plugin: git-host/generic
    config:
      token: not-the-token
defaults:
  agent: snoop
projects:
  web:
    repo_url: )" +
        url + R"(
    git_host: https-git
  locked:
    repo_url: )" +
        url + R"(
    git_host: wrong-git
)");
  unsetenv("KILN_TEST_GIT_TOKEN");
  const std::string id =
      submit("web", {{"prompt", "p"}, {"auto_commit", true}, {"auto_push", true}});
  const json build = server_->waitForTerminal(id, 60000);
  ASSERT_EQ(build["status"], "completed") << build.dump(2);
  EXPECT_EQ(git({"--git-dir", remote.repositoryPath("web"), "rev-parse", "main"}),
            build["result"]["commit_sha"]);

  const auto t0 = std::chrono::steady_clock::now();
  const json denied = server_->waitForTerminal(submit("locked", {{"prompt", "p"}}), 60000);
  EXPECT_EQ(denied["status"], "failed");
  EXPECT_THAT(denied["error"].get<std::string>(), HasSubstr("authentication"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30)) << "must not hang";

  // The token is nowhere: not in the build log (which holds the agent's
  // environment), not in any file kiln wrote (database, logs, workspaces),
  // not in the API's answers, not in kiln's own output.
  const std::string token = remote.token();
  EXPECT_THAT(server_->get("/builds/" + id + "/log").body, Not(HasSubstr(token)));
  EXPECT_THAT(server_->get("/builds/" + id).body, Not(HasSubstr(token)));
  EXPECT_THAT(allFilesBelow(server_->dir()), Not(HasSubstr(token)));
  EXPECT_THAT(server_->process().err() + server_->process().out(), Not(HasSubstr(token)));
  EXPECT_THAT(server_->get("/builds/" + id + "/log").body, HasSubstr("PATH="))
      << "the agent's environment is in the log, so its absence above means something";
}

INSTANTIATE_TEST_SUITE_P(Stores, BuildExecutionTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
