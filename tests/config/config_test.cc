#include "kiln/config/config.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln::config {
namespace {

using domain::PluginKind;
using domain::PluginRef;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

EnvLookup envOf(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

LoadResult parse(const std::string& text, std::map<std::string, std::string> env = {}) {
  return parseConfig(text, "kiln.yaml", envOf(std::move(env)));
}

std::vector<std::string> messages(const std::vector<Diagnostic>& diagnostics) {
  std::vector<std::string> out;
  for (const Diagnostic& d : diagnostics) out.push_back(d.format());
  return out;
}

std::vector<std::string> errorsOf(const std::string& text,
                                  std::map<std::string, std::string> env = {}) {
  const LoadResult result = parse(text, std::move(env));
  EXPECT_EQ(result.config.has_value(), result.diagnostics.empty());
  return messages(result.diagnostics);
}

// Config loaded without errors; fails the test with the diagnostics otherwise.
Config loaded(const std::string& text, std::map<std::string, std::string> env = {}) {
  LoadResult result = parse(text, std::move(env));
  EXPECT_THAT(messages(result.diagnostics), IsEmpty());
  if (!result.config) return Config{};
  return std::move(*result.config);
}

std::string cwd() {
  return std::filesystem::current_path().lexically_normal().string();
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln-config-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& content) const {
    const std::string file = path_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(file).parent_path());
    std::ofstream(file, std::ios::binary) << content;
    return file;
  }

 private:
  std::string path_;
};

const char* kFullExample = R"(server:
  listen: 0.0.0.0:9090
  workers: 4
  max_body_bytes: 2048
  max_prompt_bytes: 1024
  shutdown_grace_s: 0
store:
  postgres:
    url: ${KILN_DATABASE_URL}
plugins:
  bundled: false
  directories: [./my-plugins, /opt/kiln/plugins]
secrets:
  github_token: ${GITHUB_TOKEN}
instances:
  demo-agent:
    plugin: code-agent/noop
    config:
      greeting: hi
  templates:
    plugin: template-provider/files
  local:
    plugin: git-host/local
  ci:
    plugin: ci-trigger/command
  callback:
    plugin: notifier/webhook
defaults:
  default_branch: trunk
  agent: demo-agent
  template_provider: templates
  git_host: local
  ci_trigger: ci
  notifiers: [callback]
  max_running_builds: 2
  max_pending_builds: 50
  max_timeout_s: 600
projects:
  demo:
    repo_url: /srv/git/demo.git
  other:
    repo_url: https://example.com/other.git
    default_branch: main
    notifiers: []
    max_timeout_s: 60
)";

TEST(ConfigTest, LoadsEveryFieldOfTheFullExample) {
  const Config c = loaded(
      kFullExample, {{"KILN_DATABASE_URL", "postgres://u:p@db/kiln"}, {"GITHUB_TOKEN", "ghp_abc"}});
  EXPECT_EQ(c.path, "kiln.yaml");
  EXPECT_EQ(c.base_dir, cwd());
  EXPECT_EQ(c.server.listen_host, "0.0.0.0");
  EXPECT_EQ(c.server.listen_port, 9090);
  EXPECT_EQ(c.server.workers, 4);
  EXPECT_EQ(c.server.max_body_bytes, 2048);
  EXPECT_EQ(c.server.max_prompt_bytes, 1024);
  EXPECT_EQ(c.server.shutdown_grace_s, 0);
  EXPECT_EQ(c.store.kind, StoreConfig::Kind::kPostgres);
  EXPECT_EQ(c.store.postgres_url, "postgres://u:p@db/kiln");
  EXPECT_FALSE(c.plugins.bundled);
  EXPECT_THAT(c.plugins.directories, ElementsAre(cwd() + "/my-plugins", "/opt/kiln/plugins"));
  EXPECT_EQ(c.secrets, (std::map<std::string, std::string>{{"github_token", "ghp_abc"}}));

  ASSERT_EQ(c.instances.size(), 5u);
  const InstanceConfig& agent = c.instances.at("demo-agent");
  EXPECT_EQ(agent.name, "demo-agent");
  EXPECT_EQ(agent.plugin, (PluginRef{PluginKind::kCodeAgent, "noop"}));
  EXPECT_EQ(agent.config, json({{"greeting", "hi"}}));
  EXPECT_EQ(agent.where.line, 16);
  EXPECT_EQ(agent.where.column, 3);
  EXPECT_EQ(agent.plugin_where.line, 17);
  EXPECT_EQ(agent.plugin_where.column, 13);
  EXPECT_EQ(c.instances.at("templates").config, json::object());

  const ProjectConfig& demo = c.projects.at("demo");
  EXPECT_EQ(demo.id, "demo");
  EXPECT_EQ(demo.repo_url, "/srv/git/demo.git");
  EXPECT_EQ(demo.default_branch, "trunk");
  EXPECT_EQ(demo.stages.agent, "demo-agent");
  EXPECT_EQ(demo.stages.template_provider, "templates");
  EXPECT_EQ(demo.stages.git_host, "local");
  EXPECT_EQ(demo.stages.ci_trigger, "ci");
  EXPECT_EQ(demo.stages.notifiers, std::vector<std::string>{"callback"});
  EXPECT_EQ(demo.max_running_builds, 2);
  EXPECT_EQ(demo.max_pending_builds, 50);
  EXPECT_EQ(demo.max_timeout_s, 600);
  EXPECT_EQ(demo.where.line, 39);

  // A project's own values win over defaults, an explicit [] included.
  const ProjectConfig& other = c.projects.at("other");
  EXPECT_EQ(other.default_branch, "main");
  EXPECT_EQ(other.stages.notifiers, std::vector<std::string>{});
  EXPECT_EQ(other.max_timeout_s, 60);
  EXPECT_EQ(other.stages.agent, "demo-agent");
}

TEST(ConfigTest, OmittedSectionsTakeDefaults) {
  const Config c = loaded("projects:\n  p:\n    repo_url: /r\n");
  EXPECT_EQ(c.server.listen_host, "127.0.0.1");
  EXPECT_EQ(c.server.listen_port, 8080);
  EXPECT_EQ(c.server.workers, 2);
  EXPECT_EQ(c.store.kind, StoreConfig::Kind::kSqlite);
  EXPECT_EQ(c.store.sqlite_path, cwd() + "/kiln.db");
  EXPECT_TRUE(c.plugins.bundled);
  const ProjectConfig& p = c.projects.at("p");
  EXPECT_EQ(p.default_branch, "main");
  EXPECT_FALSE(p.stages.agent.has_value());
  EXPECT_FALSE(p.stages.notifiers.has_value());
  EXPECT_EQ(p.max_running_builds, 1);
  EXPECT_EQ(p.max_pending_builds, 100);
  EXPECT_EQ(p.max_timeout_s, 3600);
}

TEST(ConfigTest, SectionWhoseBodyIsCommentedOutIsEmpty) {
  const Config c = loaded("server:\n  # workers: 3\nplugins:\n");
  EXPECT_EQ(c.server.workers, 2);
}

TEST(ConfigTest, SqlitePathIsResolvedAgainstTheConfigDirectory) {
  const LoadResult r = parseConfig("store:\n  sqlite:\n    path: var/../data/kiln.db\n",
                                   "/etc/kiln/kiln.yaml", envOf({}));
  ASSERT_TRUE(r.config) << messages(r.diagnostics)[0];
  EXPECT_EQ(r.config->base_dir, "/etc/kiln");
  EXPECT_EQ(r.config->store.sqlite_path, "/etc/kiln/data/kiln.db");
}

TEST(ConfigTest, EmptyOrCommentOnlyFileIsAnError) {
  EXPECT_THAT(errorsOf(""), ElementsAre("kiln.yaml: empty configuration"));
  EXPECT_THAT(errorsOf("# nothing here\n\n# at all\n"),
              ElementsAre("kiln.yaml: empty configuration"));
}

TEST(ConfigTest, RootMustBeAMapping) {
  EXPECT_THAT(errorsOf("- server\n"),
              ElementsAre("kiln.yaml:1:1: the configuration must be a mapping of sections "
                          "(server, store, plugins, secrets, instances, defaults, projects), "
                          "got a list"));
}

TEST(ConfigTest, OnlyOneDocumentIsAllowed) {
  EXPECT_THAT(errorsOf("server: {}\n---\nserver: {}\n"),
              ElementsAre("kiln.yaml:3:1: only one YAML document is allowed; remove this "
                          "\"---\" document"));
}

TEST(ConfigTest, YamlSyntaxErrorIsReportedAtItsMark) {
  EXPECT_THAT(errorsOf("server:\n  listen: [1\n"),
              ElementsAre("kiln.yaml:3:1: end of sequence flow not found"));
}

TEST(ConfigTest, UnknownKeysSuggestTheNearestKnownKey) {
  EXPECT_THAT(
      errorsOf("server:\n  wrokers: 2\nstroe: {}\nplugins:\n  bundle: true\n  zzz: 1\n"),
      ElementsAre("kiln.yaml:2:3: unknown key \"wrokers\" in server (did you mean \"workers\"?)",
                  "kiln.yaml:3:1: unknown key \"stroe\" at the top level (did you mean \"store\"?)",
                  "kiln.yaml:5:3: unknown key \"bundle\" in plugins (did you mean \"bundled\"?)",
                  "kiln.yaml:6:3: unknown key \"zzz\" in plugins (expected one of: bundled, "
                  "directories)"));
}

TEST(ConfigTest, UnknownKeysInInstancesProjectsDefaultsAndStore) {
  EXPECT_THAT(
      errorsOf(R"(store:
  postgres:
    ur: x
instances:
  a:
    plugn: notifier/x
defaults:
  agnet: a
projects:
  p:
    repo_url: /r
    max_timeout: 5
)"),
      ElementsAre("kiln.yaml:2:3: store.postgres must set url (e.g. url: ${KILN_DATABASE_URL}) "
                  "or url_file",
                  "kiln.yaml:3:5: unknown key \"ur\" in store.postgres (did you mean \"url\"?)",
                  "kiln.yaml:5:3: instance \"a\": missing required key \"plugin\" (e.g. plugin: "
                  "notifier/webhook)",
                  "kiln.yaml:6:5: unknown key \"plugn\" in instance \"a\" (did you mean "
                  "\"plugin\"?)",
                  "kiln.yaml:8:3: unknown key \"agnet\" in defaults (did you mean \"agent\"?)",
                  "kiln.yaml:12:5: unknown key \"max_timeout\" in project \"p\" (did you mean "
                  "\"max_timeout_s\"?)"));
}

TEST(ConfigTest, UnknownKeysInsidePluginConfigAreLeftToTheSchema) {
  const Config c =
      loaded("instances:\n  a:\n    plugin: notifier/x\n    config:\n      wrokers: 1\n");
  EXPECT_EQ(c.instances.at("a").config, json({{"wrokers", 1}}));
}

TEST(ConfigTest, NotificationRetriesAreConfigurable) {
  const Config defaults = loaded("projects:\n  p:\n    repo_url: /r\n");
  EXPECT_EQ(defaults.server.delivery_backoff_s, 5);
  EXPECT_EQ(defaults.server.delivery_max_age_s, 12 * 3600);
  const Config c = loaded(
      "server:\n  delivery_backoff_s: 1\n  delivery_max_age_s: 600\nprojects:\n  p:\n"
      "    repo_url: /r\n");
  EXPECT_EQ(c.server.delivery_backoff_s, 1);
  EXPECT_EQ(c.server.delivery_max_age_s, 600);
  EXPECT_THAT(errorsOf("server:\n  delivery_backoff_s: 0\n"),
              ElementsAre("kiln.yaml:2:23: server.delivery_backoff_s must be an integer >= 1, "
                          "got \"0\""));
}

TEST(ConfigTest, IntegersMustBePlainIntegersInRange) {
  EXPECT_THAT(
      errorsOf(R"(server:
  workers: two
  max_body_bytes: 2.5
  max_prompt_bytes: "2"
  shutdown_grace_s: -1
projects:
  p:
    repo_url: /r
    max_running_builds: 0
    max_pending_builds: 99999999999
    max_timeout_s: [1]
)"),
      ElementsAre("kiln.yaml:2:12: server.workers must be an integer >= 1, got \"two\"",
                  "kiln.yaml:3:19: server.max_body_bytes must be an integer >= 1, got \"2.5\"",
                  "kiln.yaml:4:21: server.max_prompt_bytes must be an integer >= 1, got the "
                  "string \"2\" (remove the quotes)",
                  "kiln.yaml:5:21: server.shutdown_grace_s must be an integer >= 0, got \"-1\"",
                  "kiln.yaml:9:25: project \"p\": max_running_builds must be an integer >= 1, "
                  "got \"0\"",
                  "kiln.yaml:10:25: project \"p\": max_pending_builds must be an integer from 1 "
                  "to 2147483647, got \"99999999999\"",
                  "kiln.yaml:11:20: project \"p\": max_timeout_s must be an integer >= 1, got a "
                  "list"));
}

TEST(ConfigTest, EmptyValuePointsAtItsKey) {
  EXPECT_THAT(errorsOf("server:\n  workers:\n  listen: 1.2.3.4:1\n"),
              ElementsAre("kiln.yaml:2:3: server.workers must be an integer >= 1, got null"));
}

TEST(ConfigTest, BooleansAreOnlyTrueOrFalse) {
  EXPECT_THAT(errorsOf("plugins:\n  bundled: yes\n"),
              ElementsAre("kiln.yaml:2:12: plugins.bundled must be true or false, got \"yes\""));
  EXPECT_THAT(errorsOf("plugins:\n  bundled: \"true\"\n"),
              ElementsAre("kiln.yaml:2:12: plugins.bundled must be true or false, got the string "
                          "\"true\" (remove the quotes)"));
}

TEST(ConfigTest, ListenAcceptsHostPortAndBracketedIpv6) {
  Config c = loaded("server:\n  listen: \"[::1]:0\"\n");
  EXPECT_EQ(c.server.listen_host, "::1");
  EXPECT_EQ(c.server.listen_port, 0);
  c = loaded("server:\n  listen: localhost:65535\n");
  EXPECT_EQ(c.server.listen_host, "localhost");
  EXPECT_EQ(c.server.listen_port, 65535);

  const std::string expected =
      "server.listen must be \"host:port\" with a port from 0 to 65535 (e.g. 127.0.0.1:8080 or "
      "[::1]:8080), got ";
  EXPECT_THAT(errorsOf("server:\n  listen: 127.0.0.1:70000\n"),
              ElementsAre("kiln.yaml:2:11: " + expected + "\"127.0.0.1:70000\""));
  EXPECT_THAT(errorsOf("server:\n  listen: 127.0.0.1\n"),
              ElementsAre("kiln.yaml:2:11: " + expected + "\"127.0.0.1\""));
  EXPECT_THAT(errorsOf("server:\n  listen: \"::1:8080\"\n"),
              ElementsAre("kiln.yaml:2:11: " + expected + "\"::1:8080\""));
  EXPECT_THAT(errorsOf("server:\n  listen: :8080\n"),
              ElementsAre("kiln.yaml:2:11: " + expected + "\":8080\""));
}

TEST(ConfigTest, DuplicateKeysAreErrorsEverywhere) {
  EXPECT_THAT(errorsOf(R"(server:
  workers: 1
  workers: 2
instances:
  a:
    plugin: notifier/x
    config:
      retries: 1
      retries: 2
)"),
              ElementsAre("kiln.yaml:3:3: duplicate key \"workers\" (first at line 2)",
                          "kiln.yaml:9:7: duplicate key \"retries\" (first at line 8)"));
}

TEST(ConfigTest, KeysMustBeNames) {
  EXPECT_THAT(errorsOf("server: {}\n? [a]\n: 1\ninstances:\n  a:\n    plugin: notifier/x\n"
                       "    config:\n      ~: 1\n"),
              ElementsAre("kiln.yaml:2:3: a key must be a name, got a list",
                          "kiln.yaml:8:7: a key must be a name, got null"));
}

TEST(ConfigTest, NamesMustMatchTheNamePattern) {
  const std::string rule =
      " must match ^[a-z0-9][a-z0-9._-]{0,62}$ (lowercase letters, digits, \".\", \"_\" and "
      "\"-\", starting with a letter or digit, at most 63 characters)";
  EXPECT_THAT(
      errorsOf("instances:\n  Demo:\n    plugin: notifier/x\nprojects:\n  -p:\n    repo_url: /r\n"),
      ElementsAre("kiln.yaml:2:3: instance name \"Demo\"" + rule,
                  "kiln.yaml:5:3: project id \"-p\"" + rule));
  loaded("instances:\n  a.b_c-9:\n    plugin: notifier/x\n");
  EXPECT_THAT(errorsOf("instances:\n  " + std::string(64, 'a') + ":\n    plugin: notifier/x\n"),
              ElementsAre(HasSubstr("at most 63 characters")));
}

TEST(ConfigTest, MissingRequiredKeysPointAtTheMappingKey) {
  EXPECT_THAT(errorsOf("projects:\n  demo:\n    default_branch: main\n  empty:\n"),
              ElementsAre("kiln.yaml:2:3: project \"demo\": missing required key \"repo_url\"",
                          "kiln.yaml:4:3: project \"empty\": missing required key \"repo_url\""));
  EXPECT_THAT(errorsOf("projects:\n  demo:\n    repo_url: \"\"\n"),
              ElementsAre("kiln.yaml:3:15: project \"demo\": repo_url must be a non-empty "
                          "string, got \"\""));
}

TEST(ConfigTest, PluginRefMustBeKindSlashId) {
  EXPECT_THAT(
      errorsOf("instances:\n  a:\n    plugin: notifer/x\n  b:\n    plugin: webhook\n"),
      ElementsAre("kiln.yaml:3:13: instance \"a\": plugin: unknown plugin kind \"notifer\" "
                  "(kinds: code-agent, template-provider, git-host, ci-trigger, notifier)",
                  "kiln.yaml:5:13: instance \"b\": plugin: expected \"<kind>/<id>\" such as "
                  "\"code-agent/command\", got \"webhook\""));
}

const char* kInstances = R"(instances:
  a:
    plugin: code-agent/x
  cb:
    plugin: notifier/webhook
)";

TEST(ConfigTest, StageBindingsMustNameInstancesOfTheRightKind) {
  EXPECT_THAT(errorsOf(std::string(kInstances) + R"(projects:
  demo:
    repo_url: /r
    agent: x
    git_host: cb
    notifiers: [cb, a, nope]
)"),
              ElementsAre("kiln.yaml:9:12: project \"demo\": agent \"x\" is not a defined "
                          "instance (instances: a, cb)",
                          "kiln.yaml:10:15: project \"demo\": git_host \"cb\" is a notifier "
                          "instance, expected a git-host instance",
                          "kiln.yaml:11:21: project \"demo\": notifier \"a\" is a code-agent "
                          "instance, expected a notifier instance",
                          "kiln.yaml:11:24: project \"demo\": notifier \"nope\" is not a defined "
                          "instance (instances: a, cb)"));
  EXPECT_THAT(errorsOf("projects:\n  demo:\n    repo_url: /r\n    agent: cb\n"),
              ElementsAre("kiln.yaml:4:12: project \"demo\": agent \"cb\" is not a defined "
                          "instance (no instances are defined)"));
  // The spec's example: an agent bound to a notifier instance.
  EXPECT_THAT(errorsOf(std::string(kInstances) + "projects:\n  demo:\n    repo_url: /r\n"
                                                 "    agent: cb\n"),
              ElementsAre("kiln.yaml:9:12: project \"demo\": agent \"cb\" is a notifier "
                          "instance, expected a code-agent instance"));
}

TEST(ConfigTest, DefaultsAreCheckedOnceWhereTheyAreWritten) {
  EXPECT_THAT(errorsOf(std::string(kInstances) + R"(defaults:
  agent: cb
  repo_url: /r
  max_timeout_s: 0
projects:
  p1:
    repo_url: /r
  p2:
    repo_url: /r
)"),
              ElementsAre("kiln.yaml:7:10: defaults: agent \"cb\" is a notifier instance, "
                          "expected a code-agent instance",
                          "kiln.yaml:8:3: defaults: repo_url cannot have a default; set it in "
                          "each project",
                          "kiln.yaml:9:18: defaults.max_timeout_s must be an integer >= 1, got "
                          "\"0\""));
}

TEST(ConfigTest, InstanceWithBrokenPluginCausesNoSecondError) {
  EXPECT_THAT(errorsOf("instances:\n  a:\n    plugin: 5\nprojects:\n  p:\n    repo_url: /r\n"
                       "    agent: a\n"),
              ElementsAre(HasSubstr("kiln.yaml:3:13: instance \"a\": plugin: expected")));
}

TEST(ConfigTest, EveryErrorIsCollectedInFileOrder) {
  const std::vector<std::string> errors = errorsOf(R"(projects:
  p:
    agent: missing
server:
  workers: 0
bogus: 1
)");
  EXPECT_THAT(errors, ElementsAre(HasSubstr("kiln.yaml:2:3: project \"p\": missing required key"),
                                  HasSubstr("kiln.yaml:3:12: project \"p\": agent \"missing\""),
                                  HasSubstr("kiln.yaml:5:12: server.workers"),
                                  HasSubstr("kiln.yaml:6:1: unknown key \"bogus\"")));
}

TEST(ConfigTest, SubstitutesEnvironmentVariablesInValues) {
  const Config c = loaded(R"(server:
  listen: ${HOST:-127.0.0.1}:${PORT}
  workers: ${WORKERS}
secrets:
  literal: "$${NOT_A_VAR} costs $5"
  fallback: ${UNSET:-dflt}
  empty_fallback: ${EMPTY:-used}
  nothing: ${UNSET:-}
instances:
  a:
    plugin: notifier/${KIND_ID}
    config:
      port: ${PORT}
      quoted: "${PORT}"
      ${KEY}: not substituted in keys
)",
                          {{"PORT", "8081"}, {"WORKERS", "3"}, {"EMPTY", ""}, {"KIND_ID", "hook"}});
  EXPECT_EQ(c.server.listen_host, "127.0.0.1");
  EXPECT_EQ(c.server.listen_port, 8081);
  EXPECT_EQ(c.server.workers, 3);
  EXPECT_EQ(c.secrets.at("literal"), "${NOT_A_VAR} costs $5");
  EXPECT_EQ(c.secrets.at("fallback"), "dflt");
  EXPECT_EQ(c.secrets.at("empty_fallback"), "used");
  EXPECT_EQ(c.secrets.at("nothing"), "");
  const InstanceConfig& a = c.instances.at("a");
  EXPECT_EQ(a.plugin.id, "hook");
  // Plain scalars are typed after substitution; quoted ones stay strings.
  EXPECT_EQ(a.config,
            json({{"port", 8081}, {"quoted", "8081"}, {"${KEY}", "not substituted in keys"}}));
  EXPECT_TRUE(a.secret_pointers.count("/port"));
  EXPECT_FALSE(a.secret_pointers.count("/${KEY}"));
}

TEST(ConfigTest, SubstitutionErrorsPointAtTheScalar) {
  EXPECT_THAT(
      errorsOf(R"(secrets:
  github_token: ${GITHUB_TOKEN}
  a: ${UNCLOSED
  b: ${1BAD}
  c: ${A:default}
instances:
  x:
    plugin: notifier/x
    config:
      deep: [ok, "${DEEP}"]
)"),
      ElementsAre("kiln.yaml:2:17: environment variable \"GITHUB_TOKEN\" is not set",
                  "kiln.yaml:3:6: unterminated \"${\" (close it with \"}\", or write \"$${\" for "
                  "a literal \"${\")",
                  "kiln.yaml:4:6: invalid variable reference \"${1BAD}\": write ${NAME} or "
                  "${NAME:-default} with NAME matching [A-Za-z_][A-Za-z0-9_]*, or $${ for a "
                  "literal \"${\"",
                  HasSubstr("kiln.yaml:5:6: invalid variable reference \"${A:default}\""),
                  "kiln.yaml:10:18: environment variable \"DEEP\" is not set"));
}

TEST(ConfigTest, SubstitutedValuesNeverAppearInMessages) {
  const std::vector<std::string> errors = errorsOf(
      "server:\n  workers: ${SECRET}\n  listen: ${SECRET}\nprojects:\n  p:\n"
      "    repo_url: /r\n    agent: ${SECRET}\n",
      {{"SECRET", "hunter2"}});
  ASSERT_THAT(errors,
              ElementsAre("kiln.yaml:2:12: server.workers must be an integer >= 1, got "
                          "\"${SECRET}\" (value not shown)",
                          HasSubstr("kiln.yaml:3:11: server.listen must be"),
                          "kiln.yaml:7:12: project \"p\": agent \"${SECRET}\" (value not shown) "
                          "is not a defined instance (no instances are defined)"));
  for (const std::string& e : errors) EXPECT_THAT(e, Not(HasSubstr("hunter2")));
}

TEST(ConfigTest, PluginConfigBecomesJsonByTheCoreSchema) {
  const Config c = loaded(R"(instances:
  a:
    plugin: notifier/x
    config:
      t: true
      f: False
      n1: null
      n2: ~
      n3:
      i: -42
      big: 18446744073709551615
      hex: 0x1F
      fl: 2.5
      exp: 1e3
      inf: .inf
      s: hello world
      qs: "123"
      sq: 'true'
      block: |
        line
      list: [1, two, {k: v}]
      nested: {a: {b: []}}
      123: numeric key
)");
  const json expected = json::parse(R"({
    "t": true, "f": false, "n1": null, "n2": null, "n3": null, "i": -42,
    "big": 18446744073709551615, "hex": 31, "fl": 2.5, "exp": 1000.0, "inf": ".inf",
    "s": "hello world", "qs": "123", "sq": "true", "block": "line\n",
    "list": [1, "two", {"k": "v"}], "nested": {"a": {"b": []}}, "123": "numeric key"})");
  EXPECT_EQ(c.instances.at("a").config, expected);
  EXPECT_TRUE(c.instances.at("a").config["i"].is_number_integer());
  EXPECT_TRUE(c.instances.at("a").config["fl"].is_number_float());
}

TEST(ConfigTest, ConfigMustBeAMapping) {
  EXPECT_THAT(errorsOf("instances:\n  a:\n    plugin: notifier/x\n    config: [1]\n"),
              ElementsAre("kiln.yaml:4:13: instance \"a\": config must be a mapping, got a list"));
}

TEST(ConfigTest, ConfigLocationsCoverEveryNodeByJsonPointer) {
  const Config c = loaded(R"(instances:
  a:
    plugin: notifier/x
    config:
      retries: 3
      headers:
        - x
        - {k: v}
      "a/b~c": 1
  b:
    plugin: notifier/y
  c:
    plugin: notifier/y
    config:
)");
  const auto& loc = c.instances.at("a").config_locations;
  const auto at = [&](const std::string& pointer) {
    const SourceLocation& l = loc.at(pointer);
    return std::to_string(l.line) + ":" + std::to_string(l.column);
  };
  EXPECT_EQ(at(""), "5:7");
  EXPECT_EQ(at("/retries"), "5:16");
  EXPECT_EQ(at("/headers"), "7:9");
  EXPECT_EQ(at("/headers/0"), "7:11");
  EXPECT_EQ(at("/headers/1"), "8:11");
  EXPECT_EQ(at("/headers/1/k"), "8:15");
  EXPECT_EQ(at("/a~1b~0c"), "9:16");
  EXPECT_EQ(loc.size(), 7u);
  EXPECT_EQ(loc.at("").file, "kiln.yaml");
  // No `config:`: "" is the instance's key; an empty `config:` is its key.
  EXPECT_EQ(c.instances.at("b").config_locations.at("").line, 10);
  EXPECT_EQ(c.instances.at("b").config_locations.at("").column, 3);
  EXPECT_EQ(c.instances.at("c").config_locations.at("").line, 14);
  EXPECT_EQ(c.instances.at("c").config, json::object());
}

TEST(ConfigTest, FileSecretsAreReadRelativeToTheConfigDirectory) {
  TempDir dir;
  dir.write("secrets/slack", "https://hooks.example/xyz\n");
  dir.write("secrets/two-newlines", "a\n\n");
  dir.write("secrets/crlf", "tok\r\n");
  dir.write("secrets/pg", "postgres://db/kiln\n");
  const std::string yaml = dir.write("kiln.yaml", R"(store:
  postgres:
    url_file: secrets/pg
secrets:
  slack_webhook_file: secrets/slack
  two_file: ${DIR}/secrets/two-newlines
  crlf_file: ./secrets/crlf
  _file: kept as is
instances:
  a:
    plugin: notifier/x
    config:
      auth:
        token_file: secrets/crlf
      list: [{key_file: secrets/slack}]
      count_file: 5
)");
  const LoadResult r = loadConfig(yaml, envOf({{"DIR", dir.path()}}));
  ASSERT_THAT(messages(r.diagnostics), IsEmpty());
  const Config& c = *r.config;
  EXPECT_EQ(c.base_dir, dir.path());
  EXPECT_EQ(c.store.postgres_url, "postgres://db/kiln");
  EXPECT_EQ(c.secrets,
            (std::map<std::string, std::string>{{"slack_webhook", "https://hooks.example/xyz"},
                                                {"two", "a\n"},
                                                {"crlf", "tok"},
                                                {"_file", "kept as is"}}));
  const InstanceConfig& a = c.instances.at("a");
  EXPECT_EQ(a.config, json::parse(R"({"auth": {"token": "tok"},
                                      "list": [{"key": "https://hooks.example/xyz"}],
                                      "count_file": 5})"));
  // The value's location is that of the `token_file` value.
  EXPECT_EQ(a.config_locations.at("/auth/token").line, 14);
  EXPECT_EQ(a.config_locations.at("/auth/token").column, 21);
  EXPECT_FALSE(a.config_locations.count("/auth/token_file"));
  EXPECT_TRUE(a.secret_pointers.count("/auth/token"));
  EXPECT_TRUE(a.secret_pointers.count("/list/0/key"));
}

TEST(ConfigTest, FileSecretErrors) {
  TempDir dir;
  dir.write("tok", "s3cret-value\n");
  dir.write("empty", "");
  const std::string yaml = dir.write("kiln.yaml", R"(store:
  postgres:
    url_file: empty
secrets:
  token: inline
  token_file: tok
  gone_file: missing
instances:
  a:
    plugin: notifier/x
    config:
      key_file: tok
      key: x
      dir_file: .
)");
  const LoadResult r = loadConfig(yaml, envOf({}));
  const std::string f = yaml + ":";
  EXPECT_THAT(
      messages(r.diagnostics),
      ElementsAre(f + "3:15: store.postgres.url_file: \"" + dir.path() + "/empty\" is empty",
                  f + "6:3: secrets: both \"token\" and \"token_file\" are set; keep one",
                  f + "7:14: secrets.gone_file: cannot read \"" + dir.path() +
                      "/missing\": No such file or directory",
                  f + "12:7: instance \"a\": both \"key\" and \"key_file\" are set; keep one",
                  f + "14:17: instance \"a\": dir_file: cannot read \"" + dir.path() +
                      "/\": Is a directory"));
  for (const Diagnostic& d : r.diagnostics) EXPECT_THAT(d.message, Not(HasSubstr("s3cret")));
}

TEST(ConfigTest, StoreNeedsExactlyOneBackend) {
  EXPECT_THAT(errorsOf("store:\n  sqlite: {}\n  postgres:\n    url: x\n"),
              ElementsAre("kiln.yaml:3:3: store must set only one of sqlite or postgres; remove "
                          "one"));
  EXPECT_THAT(errorsOf("store: {}\n"),
              ElementsAre("kiln.yaml:1:1: store must set one of sqlite or postgres (or leave "
                          "store out for sqlite)"));
  EXPECT_THAT(errorsOf("store:\n  postgres:\n    url: x\n    url_file: y\n"),
              ElementsAre("kiln.yaml:4:5: store.postgres: both \"url\" and \"url_file\" are set; "
                          "keep one"));
  EXPECT_THAT(errorsOf("store: sqlite\n"),
              ElementsAre("kiln.yaml:1:8: store must be a mapping, got \"sqlite\""));
}

TEST(ConfigTest, DirectoriesMustBeAListOfStrings) {
  EXPECT_THAT(errorsOf("plugins:\n  directories: ./p\n"),
              ElementsAre("kiln.yaml:2:16: plugins.directories must be a list of strings, got "
                          "\"./p\""));
  EXPECT_THAT(errorsOf("plugins:\n  directories: [a, {b: c}]\n"),
              ElementsAre("kiln.yaml:2:20: plugins.directories[1] must be a non-empty string, "
                          "got a mapping"));
}

TEST(ConfigTest, MissingFileIsOneDiagnosticWithoutPosition) {
  const LoadResult r = loadConfig("/nonexistent/kiln.yaml", envOf({}));
  EXPECT_FALSE(r.config);
  EXPECT_THAT(messages(r.diagnostics),
              ElementsAre("/nonexistent/kiln.yaml: cannot read configuration: No such file or "
                          "directory"));
  EXPECT_EQ(r.diagnostics[0].where.line, 0);
}

TEST(ConfigTest, DiagnosticFormat) {
  EXPECT_EQ((Diagnostic{{"a.yaml", 3, 7}, "bad"}).format(), "a.yaml:3:7: bad");
  EXPECT_EQ((Diagnostic{{"a.yaml", 0, 0}, "bad"}).format(), "a.yaml: bad");
}

TEST(ConfigTest, ProcessEnvironmentReadsGetenv) {
  ::setenv("KILN_CONFIG_TEST_VAR", "from-env", 1);
  ::unsetenv("KILN_CONFIG_TEST_UNSET");
  const EnvLookup env = processEnvironment();
  EXPECT_EQ(env("KILN_CONFIG_TEST_VAR"), "from-env");
  EXPECT_EQ(env("KILN_CONFIG_TEST_UNSET"), std::nullopt);
}

// validatePluginConfigs --------------------------------------------------

class PluginConfigsTest : public ::testing::Test {
 protected:
  PluginConfigsTest() {
    webhook_.file = "/usr/lib/kiln/plugins/libkiln_webhook.so";
    webhook_.config_schema = json::parse(R"({
      "type": "object",
      "properties": {
        "url": {"type": "string"},
        "timeout_ms": {"type": "integer", "minimum": 1, "default": 5000},
        "retries": {"type": "integer", "default": 3}
      },
      "required": ["url"]
    })");
    broken_.file = "/plugins/libbroken.so";
    broken_.config_schema = json::parse(R"({"type": 5})");
  }

  std::vector<std::string> validate(Config& c) {
    const PluginLookup lookup = [this](const PluginRef& ref) -> const PluginSchemaInfo* {
      if (ref.str() == "notifier/webhook") return &webhook_;
      if (ref.str() == "notifier/broken") return &broken_;
      return nullptr;
    };
    return messages(validatePluginConfigs(c, lookup, known_));
  }

  PluginSchemaInfo webhook_;
  PluginSchemaInfo broken_;
  std::vector<PluginRef> known_ = {{PluginKind::kNotifier, "webhook"},
                                   {PluginKind::kNotifier, "slack"},
                                   {PluginKind::kCodeAgent, "noop"}};
};

TEST_F(PluginConfigsTest, FillsDefaultsIntoValidConfigs) {
  Config c = loaded(
      "instances:\n  hook:\n    plugin: notifier/webhook\n    config:\n"
      "      url: http://x\n      retries: 0\n");
  EXPECT_THAT(validate(c), IsEmpty());
  EXPECT_EQ(c.instances.at("hook").config,
            json({{"url", "http://x"}, {"retries", 0}, {"timeout_ms", 5000}}));
}

TEST_F(PluginConfigsTest, ReportsViolationsAtTheOffendingLine) {
  Config c = loaded(R"(instances:
  hook:
    plugin: notifier/webhook
    config:
      timeout_ms: 0
  nourl:
    plugin: notifier/webhook
)");
  EXPECT_THAT(validate(c),
              ElementsAre(HasSubstr("kiln.yaml:5:7: instance \"hook\" (notifier/webhook from "
                                    "/usr/lib/kiln/plugins/libkiln_webhook.so): config: "),
                          "kiln.yaml:5:19: instance \"hook\" (notifier/webhook from "
                          "/usr/lib/kiln/plugins/libkiln_webhook.so): /timeout_ms: must be >= 1, "
                          "got 0",
                          HasSubstr("kiln.yaml:6:3: instance \"nourl\" (notifier/webhook from "
                                    "/usr/lib/kiln/plugins/libkiln_webhook.so): config: ")));
  // Invalid configs are left as written.
  EXPECT_EQ(c.instances.at("hook").config, json({{"timeout_ms", 0}}));
}

TEST_F(PluginConfigsTest, UnknownPluginSuggestsTheNearestLoadedOne) {
  Config c = loaded(R"(instances:
  a:
    plugin: notifier/slak
  b:
    plugin: notifier/zzzzzzzz
  c:
    plugin: code-agent/webhook
  d:
    plugin: git-host/local
)");
  EXPECT_THAT(validate(c),
              ElementsAre("kiln.yaml:3:13: instance \"a\": no plugin \"notifier/slak\" is loaded "
                          "(did you mean \"notifier/slack\"?)",
                          "kiln.yaml:5:13: instance \"b\": no plugin \"notifier/zzzzzzzz\" is "
                          "loaded (loaded notifier plugins: slack, webhook)",
                          "kiln.yaml:7:13: instance \"c\": no plugin \"code-agent/webhook\" is "
                          "loaded (did you mean \"notifier/webhook\"?)",
                          "kiln.yaml:9:13: instance \"d\": no plugin \"git-host/local\" is loaded "
                          "(no git-host plugins are loaded)"));
}

TEST_F(PluginConfigsTest, SchemaThatDoesNotCompileNamesThePluginFile) {
  Config c = loaded("instances:\n  a:\n    plugin: notifier/broken\n");
  EXPECT_THAT(validate(c),
              ElementsAre(HasSubstr("kiln.yaml:3:13: instance \"a\" (notifier/broken from "
                                    "/plugins/libbroken.so): the plugin's config schema is invalid "
                                    "(a bug in /plugins/libbroken.so): ")));
}

TEST_F(PluginConfigsTest, SecretValuesAreRedactedFromSchemaMessages) {
  TempDir dir;
  const std::string yaml = dir.write("kiln.yaml", R"(instances:
  hook:
    plugin: notifier/webhook
    config:
      url: x
      timeout_ms: ${TIMEOUT}
)");
  LoadResult r = loadConfig(yaml, envOf({{"TIMEOUT", "-987"}}));
  ASSERT_TRUE(r.config);
  EXPECT_THAT(validate(*r.config),
              ElementsAre(yaml + ":6:19: instance \"hook\" (notifier/webhook from "
                                 "/usr/lib/kiln/plugins/libkiln_webhook.so): /timeout_ms: must be "
                                 ">= 1, got <secret value>"));
}

}  // namespace
}  // namespace kiln::config
