// The `kiln` binary end to end: every command as a user runs it, as a child
// process, with real plugins and real HTTP.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "http_client.h"
#include "subprocess.h"

namespace {

namespace fs = std::filesystem;
using kiln::testing::httpRequest;
using kiln::testing::run;
using kiln::testing::Subprocess;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

const std::string kKiln = KILN_BINARY;
const std::string kSource = KILN_SOURCE_DIR;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "kiln-cli-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& content) const {
    const std::string file = path_ + "/" + name;
    fs::create_directories(fs::path(file).parent_path());
    std::ofstream(file) << content;
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

TEST(CliTest, VersionAndHelpAtEveryLevel) {
  auto v = run({kKiln, "--version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out, "kiln 0.1.0 (plugin ABI 1.0)\n");
  EXPECT_EQ(run({kKiln, "version"}).out, v.out);

  for (const std::vector<std::string>& args : {std::vector<std::string>{"--help"},
                                               {"serve", "--help"},
                                               {"config", "check", "--help"},
                                               {"config", "--help"},
                                               {"plugins", "list", "--help"},
                                               {"plugins", "-h"}}) {
    std::vector<std::string> argv = {kKiln};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv);
    EXPECT_EQ(r.code, 0) << args[0];
    EXPECT_THAT(r.out, HasSubstr("Usage: kiln")) << args[0];
  }
}

TEST(CliTest, MisuseExitsTwoWithAMessageThatSaysWhatToDo) {
  auto none = run({kKiln});
  EXPECT_EQ(none.code, 2);
  EXPECT_THAT(none.err, HasSubstr("Usage: kiln <command>"));

  auto unknown = run({kKiln, "sevre"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_THAT(unknown.err, HasSubstr("unknown command \"sevre\""));

  auto sub = run({kKiln, "config", "validate", "x.yaml"});
  EXPECT_EQ(sub.code, 2);
  EXPECT_THAT(sub.err, HasSubstr("did you mean \"kiln config check\"?"));

  auto opt = run({kKiln, "serve", "--config", "x.yaml", "--port", "1"});
  EXPECT_EQ(opt.code, 2);
  EXPECT_THAT(opt.err, HasSubstr("unknown option --port"));

  auto missing = run({kKiln, "serve"});
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.err, HasSubstr("--config FILE is required"));
}

TEST(CliTest, EveryExampleConfigPassesConfigCheck) {
  const std::map<std::string, std::string> env = {
      {"KILN_DATABASE_URL", "postgresql://kiln@localhost/kiln"},
      {"GITHUB_TOKEN", "t0ken"},
      {"ANTHROPIC_API_KEY", "sk-test"},
      {"KILN_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}};
  int checked = 0, agents = 0;
  // examples/agents configure real agent CLIs, which need not be installed.
  for (const std::string dir : {"/examples", "/examples/agents"}) {
    for (const auto& e : fs::directory_iterator(kSource + dir)) {
      if (e.path().extension() != ".yaml") continue;
      auto r = run({kKiln, "config", "check", e.path().string()}, env);
      EXPECT_EQ(r.code, 0) << e.path() << "\n" << r.err;
      EXPECT_THAT(r.out, HasSubstr(": OK (")) << e.path();
      ++checked;
      if (dir == "/examples/agents") ++agents;
    }
  }
  EXPECT_GE(checked, 5);
  EXPECT_GE(agents, 3) << "claude-code, aider and codex";
}

TEST(CliTest, ConfigCheckReportsEveryErrorAsFileLineColumn) {
  TempDir dir;
  const std::string file = dir.write("kiln.yaml", R"(server:
  wrokers: 2
instances:
  agent:
    plugin: code-agent/noop
    config:
      delay_ms: -5
  log:
    plugin: notifier/lgo
  tpl:
    plugin: template-provider/filesystem
    config:
      directories: ["${KILN_TEST_UNSET_VAR}"]
projects:
  demo:
    repo_url: /srv/demo.git
    agent: log
)");
  auto r = run({kKiln, "config", "check", file});
  EXPECT_EQ(r.code, 1);
  const auto errs = lines(r.err);
  EXPECT_THAT(errs, testing::Contains(file + ":2:3: unknown key \"wrokers\" in server (did you "
                                             "mean \"workers\"?)"));
  EXPECT_THAT(errs, testing::Contains(AllOf(HasSubstr(file + ":7:17: instance \"agent\""),
                                            HasSubstr("/delay_ms: must be >= 0"))));
  EXPECT_THAT(errs, testing::Contains(AllOf(HasSubstr(file + ":9:13:"), HasSubstr("notifier/lgo"),
                                            HasSubstr("did you mean \"notifier/log\"?"))));
  EXPECT_THAT(errs, testing::Contains(AllOf(HasSubstr(file + ":13:21:"),
                                            HasSubstr("\"KILN_TEST_UNSET_VAR\" is not set"))));
  EXPECT_THAT(errs, testing::Contains(AllOf(HasSubstr(file + ":17:12:"),
                                            HasSubstr("expected a code-agent instance"))));
  EXPECT_THAT(errs.back(), HasSubstr(" errors"));
}

TEST(CliTest, ConfigCheckReportsSyntaxErrorsAndMissingFiles) {
  TempDir dir;
  const std::string file = dir.write("bad.yaml", "server:\n  listen: [unclosed\n");
  auto r = run({kKiln, "config", "check", file});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(file + ":3:1: "));

  auto missing = run({kKiln, "config", "check", dir.path() + "/nope.yaml"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.err, HasSubstr(dir.path() + "/nope.yaml: cannot read configuration"));
}

TEST(CliTest, ConfigCheckCreatesInstancesAndReportsTheirFailures) {
  TempDir dir;
  const std::string file = dir.write("kiln.yaml", R"(instances:
  tpl:
    plugin: template-provider/filesystem
    config:
      directories: ["${KILN_CONFIG_DIR}/missing-templates"]
)");
  auto r = run({kKiln, "config", "check", file});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, AllOf(HasSubstr(file + ":2:3: instance \"tpl\""),
                           HasSubstr("template-provider-filesystem.so"),
                           HasSubstr("missing-templates\" does not exist")));
}

TEST(CliTest, SecretsComeFromFilesAndEnvironmentAndNeverShow) {
  TempDir dir;
  dir.write("token.txt", "tok-from-file\n");
  const std::string file = dir.write("kiln.yaml", R"(secrets:
  api_token_file: token.txt
  other: ${KILN_TEST_SECRET}
instances:
  git:
    plugin: git-host/generic
    config:
      token_file: token.txt
      ssh_user: 12
)");
  auto r = run({kKiln, "config", "check", file}, {{"KILN_TEST_SECRET", "tok-from-env"}});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(file + ":9:17:"));  // ssh_user must be a string
  EXPECT_THAT(r.err, Not(HasSubstr("tok-from-file")));
  EXPECT_THAT(r.err, Not(HasSubstr("tok-from-env")));

  dir.write("kiln.yaml", R"(instances:
  git:
    plugin: git-host/generic
    config:
      token_file: no-such-token.txt
)");
  auto missing = run({kKiln, "config", "check", file});
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.err, AllOf(HasSubstr(file + ":5:19:"), HasSubstr("no-such-token.txt")));
}

TEST(CliTest, MigrateAppliesPendingMigrationsOnce) {
  TempDir dir;
  const std::string file = dir.write("kiln.yaml", "store:\n  sqlite:\n    path: data/kiln.db\n");
  auto first = run({kKiln, "migrate", "--config", file});
  EXPECT_EQ(first.code, 0) << first.err;
  EXPECT_THAT(first.out,
              testing::MatchesRegex(
                  "kiln migrate: applied [1-9][0-9]* migrations?; schema version [1-9][0-9]*\n"));
  EXPECT_TRUE(fs::exists(dir.path() + "/data/kiln.db"));
  auto second = run({kKiln, "migrate", "--config", file});
  EXPECT_EQ(second.code, 0);
  EXPECT_THAT(second.out, HasSubstr("applied 0 migrations"));

  const std::string pg = dir.write(
      "pg.yaml", "store:\n  postgres:\n    url: postgresql://kiln:s3cret@127.0.0.1:1/none\n");
  auto down = run({kKiln, "migrate", "--config", pg});
  EXPECT_EQ(down.code, 1);
  EXPECT_THAT(down.err, HasSubstr("kiln migrate: "));
  EXPECT_THAT(down.err, Not(HasSubstr("s3cret")));
}

TEST(CliTest, PluginsListShowsBundledPluginsOfEveryKind) {
  auto r = run({kKiln, "plugins", "list"});
  EXPECT_EQ(r.code, 0) << r.err;
  const auto rows = lines(r.out);
  ASSERT_GE(rows.size(), 6u);
  EXPECT_THAT(rows[0], testing::MatchesRegex("KIND +ID +VERSION +ABI +FILE"));
  for (const char* kind :
       {"code-agent", "template-provider", "git-host", "ci-trigger", "notifier"}) {
    EXPECT_THAT(r.out, testing::ContainsRegex(std::string("\n") + kind +
                                              " +[a-z-]+ +[0-9]+\\.[0-9]+\\.[0-9]+ +1\\.0 +/"))
        << kind;
  }

  auto j = run({kKiln, "plugins", "list", "--json"});
  ASSERT_EQ(j.code, 0);
  const json doc = json::parse(j.out);
  EXPECT_GE(doc["plugins"].size(), 6u);  // at least one per kind, and code-agent/command
  EXPECT_TRUE(std::any_of(doc["plugins"].begin(), doc["plugins"].end(), [](const json& p) {
    return p["kind"] == "code-agent" && p["id"] == "command";
  })) << j.out;
  EXPECT_TRUE(doc["errors"].empty());
  EXPECT_EQ(doc["plugins"][0]["abi"], "1.0");
  EXPECT_TRUE(doc["plugins"][0]["config_schema"].is_object());
}

TEST(CliTest, PluginsListNamesLibrariesThatFailToLoad) {
  TempDir dir;
  dir.write("broken.so", "not a library");
  auto r = run({kKiln, "plugins", "list", "--plugin-dir", dir.path()});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err,
              HasSubstr("error: " + dir.path() + "/broken.so: not a loadable shared library"));
  EXPECT_THAT(r.out, HasSubstr("code-agent"));  // the good ones are still listed
}

// Starts `kiln serve` on a free port; returns the port from its first line.
int startServe(Subprocess& p) {
  const auto line = p.readLine(20s);
  EXPECT_TRUE(line.has_value()) << "kiln serve printed nothing; stderr:\n" << p.err();
  if (!line) return 0;
  std::smatch m;
  const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+) ");
  EXPECT_TRUE(std::regex_search(*line, m, listening)) << *line;
  return m.empty() ? 0 : std::stoi(m[1]);
}

TEST(CliTest, ServeAnswersHealthAndVersionAndStopsOnSigterm) {
  TempDir dir;
  const std::string file = dir.write("kiln.yaml", R"(server:
  listen: 127.0.0.1:0
instances:
  agent:
    plugin: code-agent/noop
)");
  Subprocess p({kKiln, "serve", "--config", file});
  const int port = startServe(p);
  ASSERT_NE(port, 0);

  auto health = httpRequest("GET", "127.0.0.1", port, "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(json::parse(health.body), (json{{"status", "ok"}}));

  auto version = httpRequest("GET", "127.0.0.1", port, "/version");
  EXPECT_EQ(version.status, 200);
  const json v = json::parse(version.body);
  EXPECT_EQ(v["version"], "0.1.0");
  EXPECT_EQ(v["plugin_abi"], "1.0");

  auto missing = httpRequest("GET", "127.0.0.1", port, "/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.content_type, "application/problem+json");
  EXPECT_EQ(json::parse(missing.body)["status"], 404);

  auto wrong_method = httpRequest("POST", "127.0.0.1", port, "/healthz", "{}");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(wrong_method.headers["Allow"], "GET");
  EXPECT_THAT(json::parse(wrong_method.body)["detail"].get<std::string>(), HasSubstr("use GET"));

  const auto t0 = std::chrono::steady_clock::now();
  p.signal(SIGTERM);
  const auto code = p.wait(5s);
  ASSERT_TRUE(code.has_value()) << "kiln serve did not stop within 5 s of SIGTERM";
  EXPECT_EQ(*code, 0) << p.err();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_THAT(p.out(), HasSubstr("received SIGTERM, shutting down"));
}

TEST(CliTest, ServeStopsOnSigintWithAnOpenKeepAliveConnection) {
  TempDir dir;
  const std::string file = dir.write("kiln.yaml", "server:\n  listen: 127.0.0.1:0\n");
  Subprocess p({kKiln, "serve", "--config", file});
  const int port = startServe(p);
  ASSERT_NE(port, 0);
  EXPECT_EQ(httpRequest("GET", "127.0.0.1", port, "/healthz").status, 200);
  p.signal(SIGINT);
  const auto code = p.wait(5s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

TEST(CliTest, ServeRefusesABrokenConfigWithItsErrors) {
  TempDir dir;
  const std::string file = dir.write("kiln.yaml", "server:\n  listen: 127.0.0.1:0\n  workers: 0\n");
  Subprocess p({kKiln, "serve", "--config", file});
  const auto code = p.wait(20s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1);
  EXPECT_THAT(p.err(), AllOf(HasSubstr(file + ":3:12:"),
                             HasSubstr("not starting: the configuration has errors")));
}

TEST(CliTest, ServeReportsAPortInUse) {
  TempDir dir;
  const std::string file = dir.write("kiln.yaml", "server:\n  listen: 127.0.0.1:0\n");
  Subprocess first({kKiln, "serve", "--config", file});
  const int port = startServe(first);
  ASSERT_NE(port, 0);
  auto second =
      run({kKiln, "serve", "--config", file, "--listen", "127.0.0.1:" + std::to_string(port)});
  EXPECT_EQ(second.code, 1);
  EXPECT_THAT(second.err, HasSubstr("cannot listen on 127.0.0.1:" + std::to_string(port)));
}

}  // namespace
