// The loader and registry against real plugin libraries: the C fixture, the
// SDK fixture, broken variants, and the bundled plugins.
#include "kiln/plugins/registry.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln/plugin.h"

namespace kiln::plugins {
namespace {

namespace fs = std::filesystem;
using domain::PluginKind;
using domain::PluginRef;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string fixture(const std::string& name) {
  return std::string(KILN_FIXTURE_DIR) + "/" + name + "/" + name + ".so";
}

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("kiln-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  static inline std::atomic<int> counter_{0};
  fs::path path_;
};

struct Recorder {
  std::mutex mu;
  std::vector<std::pair<int32_t, std::string>> events;
  std::vector<std::string> logs;
};

HostServices servicesWith(Recorder* rec) {
  HostServices s;
  s.secrets["fixture_secret"] = "s3cr3t";
  s.log = [rec](LogLevel, const std::string& line) {
    std::lock_guard<std::mutex> lock(rec->mu);
    rec->logs.push_back(line);
  };
  return s;
}

CallOptions recordingOptions(Recorder* rec) {
  CallOptions o;
  o.build_id = "b-1";
  o.on_event = [rec](int32_t kind, std::string_view payload) {
    std::lock_guard<std::mutex> lock(rec->mu);
    rec->events.emplace_back(kind, std::string(payload));
  };
  return o;
}

std::shared_ptr<PluginInstance> mustCreate(const Registry& r, PluginRef ref,
                                           const json& config = json::object()) {
  auto created = r.create(ref, "test-" + ref.id, config);
  EXPECT_TRUE(created.ok()) << (created.ok() ? "" : created.error().message);
  return created.ok() ? created.value() : nullptr;
}

json mustInvoke(const PluginInstance& inst, Operation op, const json& request,
                const CallOptions& options = {}) {
  auto r = inst.invoke(op, request.dump(), options);
  EXPECT_TRUE(r.ok()) << operationName(op) << ": " << (r.ok() ? "" : r.error().message);
  return r.ok() ? json::parse(r.value()) : json();
}

TEST(RegistryTest, CPluginProvidesEveryKindThroughItsTables) {
  Recorder rec;
  Registry registry(servicesWith(&rec));
  ASSERT_TRUE(registry.loadFile(fixture("fixture-c")).ok());
  ASSERT_EQ(registry.list().size(), 5u);
  const PluginInfo* info = registry.find({PluginKind::kCodeAgent, "c-agent"});
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->kind_id, "kiln.code-agent/1");
  EXPECT_EQ(info->version, "1.2.3");
  EXPECT_EQ(info->library_name, "c-fixture");
  EXPECT_EQ(info->homepage, "https://example.invalid/c-agent");
  EXPECT_EQ(info->abi_major, 1u);
  EXPECT_EQ(info->file, fs::path(fixture("fixture-c")).lexically_normal().string());
  EXPECT_THAT(rec.logs, testing::Contains(HasSubstr("c fixture initialised")));

  auto agent = mustCreate(registry, {PluginKind::kCodeAgent, "c-agent"});
  ASSERT_NE(agent, nullptr);
  const json result =
      mustInvoke(*agent, Operation::kExecute, {{"prompt", "do it"}}, recordingOptions(&rec));
  EXPECT_EQ(result["output"], "c agent ran");
  EXPECT_EQ(result["calls"], 1);
  EXPECT_EQ(result["secret_status"], KILN_OK);
  EXPECT_EQ(result["secret_len"], 6);
  EXPECT_EQ(result["http_status"], KILN_ERR_UNAVAILABLE);
  EXPECT_EQ(result["process_status"], KILN_ERR_UNAVAILABLE);
  EXPECT_EQ(result["cancelled"], false);
  EXPECT_TRUE(result["extension"].is_null());
  ASSERT_EQ(rec.events.size(), 2u);
  EXPECT_EQ(rec.events[0],
            std::make_pair(int32_t{KILN_EVENT_OUTPUT}, std::string("hello from C\n")));
  EXPECT_EQ(rec.events[1].first, KILN_EVENT_PROGRESS);
  EXPECT_THAT(rec.logs,
              testing::Contains(AllOf(HasSubstr("instance \"test-c-agent\""),
                                      HasSubstr("build b-1"), HasSubstr("c agent starting"))));

  auto templates = mustCreate(registry, {PluginKind::kTemplateProvider, "c-templates"});
  const json render_request = {{"template", "t"}};
  EXPECT_EQ(mustInvoke(*templates, Operation::kRender, render_request)["prompt"],
            "c-rendered " + std::to_string(render_request.dump().size()) + " bytes");
  EXPECT_EQ(mustInvoke(*templates, Operation::kList, json::object())["templates"][0]["name"],
            "c-template");

  auto git = mustCreate(registry, {PluginKind::kGitHost, "c-git"});
  EXPECT_EQ(mustInvoke(*git, Operation::kCredentials, {{"url", "file:///x"}})["type"], "none");
  EXPECT_FALSE(git->supports(Operation::kCreateRepository));
  auto unsupported = git->invoke(Operation::kCreateRepository, "{}");
  ASSERT_FALSE(unsupported.ok());
  EXPECT_EQ(unsupported.error().code, ErrorCode::kUnsupported);
  EXPECT_THAT(unsupported.error().message, HasSubstr("does not support create_repository()"));

  auto ci = mustCreate(registry, {PluginKind::kCiTrigger, "c-ci"});
  EXPECT_EQ(mustInvoke(*ci, Operation::kTrigger, {{"commit_sha", "abc"}})["run_id"], "c-1");
  EXPECT_EQ(mustInvoke(*ci, Operation::kStatus, {{"run_id", "c-1"}})["status"], "success");

  auto notifier = mustCreate(registry, {PluginKind::kNotifier, "c-notifier"});
  EXPECT_EQ(mustInvoke(*notifier, Operation::kNotify, {{"event", {{"type", "x"}}}})["delivered"],
            true);
  auto bad = notifier->invoke(Operation::kNotify, "{}");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(bad.error().message, HasSubstr("request has no event"));

  // An operation of another kind is refused by the host, not sent to the plugin.
  auto wrong = notifier->invoke(Operation::kExecute, "{}");
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.error().message, HasSubstr("is a notifier, it has no execute()"));
}

TEST(RegistryTest, SdkPluginProvidesEveryKindAndOmitsWhatItDoesNotOverride) {
  Recorder rec;
  Registry registry(servicesWith(&rec));
  ASSERT_TRUE(registry.loadFile(fixture("fixture-sdk")).ok());
  ASSERT_EQ(registry.list().size(), 5u);

  auto agent = mustCreate(registry, {PluginKind::kCodeAgent, "sdk-agent"});
  const json r =
      mustInvoke(*agent, Operation::kExecute, {{"prompt", "p1"}}, recordingOptions(&rec));
  EXPECT_EQ(r["output"], "sdk agent ran: p1");
  EXPECT_EQ(r["has_secret"], true);
  ASSERT_EQ(rec.events.size(), 2u);
  EXPECT_EQ(rec.events[0].second, "sdk agent output\n");
  EXPECT_EQ(json::parse(rec.events[1].second), (json{{"message", "working"}, {"percent", 10}}));

  auto templates = mustCreate(registry, {PluginKind::kTemplateProvider, "sdk-templates"});
  EXPECT_EQ(mustInvoke(*templates, Operation::kRender, {{"template", "x"}})["prompt"],
            "rendered x");
  EXPECT_FALSE(templates->supports(Operation::kList));

  auto git = mustCreate(registry, {PluginKind::kGitHost, "sdk-git"});
  EXPECT_EQ(mustInvoke(*git, Operation::kCredentials, json::object())["type"], "userpass");
  EXPECT_EQ(mustInvoke(*git, Operation::kCreateRepository, {{"name", "demo"}})["repo_url"],
            "file:///repos/demo.git");
  EXPECT_FALSE(git->supports(Operation::kOpenChangeRequest));

  auto ci = mustCreate(registry, {PluginKind::kCiTrigger, "sdk-ci"});
  EXPECT_EQ(mustInvoke(*ci, Operation::kTrigger, json::object())["run_id"], "sdk-7");
  EXPECT_FALSE(ci->supports(Operation::kStatus));

  auto notifier = mustCreate(registry, {PluginKind::kNotifier, "sdk-notifier"});
  EXPECT_EQ(mustInvoke(*notifier, Operation::kNotify, {{"event", json::object()}})["delivered"],
            true);
}

TEST(RegistryTest, ExceptionsInsideAnSdkPluginBecomeErrorsAndTheHostGoesOn) {
  Registry registry;
  ASSERT_TRUE(registry.loadFile(fixture("fixture-sdk")).ok());
  auto agent = mustCreate(registry, {PluginKind::kCodeAgent, "sdk-agent"});

  auto runtime = agent->invoke(Operation::kExecute, R"({"mode":"throw-runtime"})");
  ASSERT_FALSE(runtime.ok());
  EXPECT_EQ(runtime.error().code, ErrorCode::kInternal);
  EXPECT_THAT(runtime.error().message,
              AllOf(HasSubstr("instance \"test-sdk-agent\""), HasSubstr("fixture-sdk.so"),
                    HasSubstr("uncaught exception: boom from the SDK agent")));

  auto int_thrown = agent->invoke(Operation::kExecute, R"({"mode":"throw-int"})");
  ASSERT_FALSE(int_thrown.ok());
  EXPECT_THAT(int_thrown.error().message, HasSubstr("uncaught exception of unknown type"));

  auto typed = agent->invoke(Operation::kExecute, R"({"mode":"kiln-error"})");
  ASSERT_FALSE(typed.ok());
  EXPECT_EQ(typed.error().code, ErrorCode::kUnavailable);
  EXPECT_TRUE(typed.error().retryable);
  EXPECT_THAT(typed.error().message, HasSubstr("backend busy, try later"));

  // A host service failure the plugin does not catch keeps the host's message.
  auto http = agent->invoke(Operation::kExecute, R"({"mode":"http"})");
  ASSERT_FALSE(http.ok());
  EXPECT_EQ(http.error().code, ErrorCode::kUnavailable);
  EXPECT_FALSE(http.error().retryable);
  EXPECT_THAT(http.error().message, HasSubstr("the host service http_request is not available"));

  // Malformed request JSON makes nlohmann throw inside the plugin.
  auto parse = agent->invoke(Operation::kExecute, "{not json");
  ASSERT_FALSE(parse.ok());
  EXPECT_EQ(parse.error().code, ErrorCode::kInternal);

  EXPECT_EQ(mustInvoke(*agent, Operation::kExecute, {{"prompt", "again"}})["output"],
            "sdk agent ran: again");
}

TEST(RegistryTest, CancellationReachesThePlugin) {
  Registry registry;
  ASSERT_TRUE(registry.loadFile(fixture("fixture-sdk")).ok());
  auto agent = mustCreate(registry, {PluginKind::kCodeAgent, "sdk-agent"});
  std::atomic<bool> cancel{false};
  CallOptions options;
  options.is_cancelled = [&] { return cancel.load(); };
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cancel = true;
  });
  auto r = agent->invoke(Operation::kExecute, R"({"mode":"wait-cancel"})", options);
  canceller.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCancelled);
}

TEST(RegistryTest, ContractViolationsAreReportedAsPluginBugs) {
  Registry registry;
  ASSERT_TRUE(registry.loadFile(fixture("fixture-c")).ok());
  auto agent = mustCreate(registry, {PluginKind::kCodeAgent, "c-agent"});

  auto silent = agent->invoke(Operation::kExecute, R"({"mode":"silent-failure"})");
  ASSERT_FALSE(silent.ok());
  EXPECT_EQ(silent.error().code, ErrorCode::kPluginBug);
  EXPECT_THAT(silent.error().message,
              AllOf(HasSubstr("fixture-c.so"), HasSubstr("execute() failed with status 2"),
                    HasSubstr("without an error message (a plugin bug)")));

  auto no_result = agent->invoke(Operation::kExecute, R"({"mode":"no-result"})");
  ASSERT_FALSE(no_result.ok());
  EXPECT_EQ(no_result.error().code, ErrorCode::kPluginBug);
  EXPECT_THAT(no_result.error().message, HasSubstr("succeeded without a result"));

  auto bad_json = agent->invoke(Operation::kExecute, R"({"mode":"bad-json"})");
  ASSERT_FALSE(bad_json.ok());
  EXPECT_EQ(bad_json.error().code, ErrorCode::kPluginBug);
  EXPECT_THAT(bad_json.error().message, HasSubstr("set_result was given invalid JSON"));

  auto failure = agent->invoke(Operation::kExecute, R"({"mode":"failure"})");
  ASSERT_FALSE(failure.ok());
  EXPECT_EQ(failure.error().code, ErrorCode::kUnavailable);
  EXPECT_TRUE(failure.error().retryable);
  EXPECT_THAT(failure.error().message, HasSubstr("c agent: backend unreachable"));
}

TEST(RegistryTest, CreateFailureCarriesThePluginsMessage) {
  Registry registry;
  ASSERT_TRUE(registry.loadFile(fixture("fixture-c")).ok());
  auto r = registry.create({PluginKind::kCodeAgent, "c-agent"}, "broken", {{"fail_create", true}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(r.error().message,
              AllOf(HasSubstr("instance \"broken\""), HasSubstr("code-agent/c-agent"),
                    HasSubstr("fixture-c.so"),
                    HasSubstr("c fixture refuses to start: fail_create is set")));

  ASSERT_TRUE(registry.loadFile(fixture("fixture-sdk")).ok());
  auto thrown = registry.create({PluginKind::kNotifier, "sdk-notifier"}, "n", {{"fail", true}});
  ASSERT_FALSE(thrown.ok());
  EXPECT_EQ(thrown.error().code, ErrorCode::kUnavailable);
  EXPECT_THAT(thrown.error().message, HasSubstr("cannot reach the notification backend"));
}

TEST(RegistryTest, ConfigRejectedByThePluginSchemaNamesThePathAndWhy) {
  Registry registry;
  ASSERT_TRUE(registry.loadFile(fixture("fixture-c")).ok());
  auto r = registry.create({PluginKind::kCodeAgent, "c-agent"}, "strict",
                           {{"retries", -1}, {"retires", 2}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(r.error().message,
              AllOf(HasSubstr("instance \"strict\""), HasSubstr("config rejected"),
                    HasSubstr("/retries"), HasSubstr("retires")));
}

TEST(RegistryTest, UnknownPluginIsNotFound) {
  Registry registry;
  auto r = registry.create({PluginKind::kNotifier, "nope"}, "x", json::object());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_THAT(r.error().message, HasSubstr("no plugin notifier/nope is loaded"));
}

TEST(RegistryTest, MajorVersionMismatchIsRefusedWithBothVersions) {
  Registry registry;
  auto r = registry.loadFile(fixture("fixture-c-major2"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message,
              AllOf(HasSubstr("built for plugin ABI 2.0"), HasSubstr("speaks ABI 1.0"),
                    HasSubstr("major versions must match")));
  EXPECT_TRUE(registry.list().empty());
}

TEST(RegistryTest, PluginBuiltForANewerMinorIsRefusedWithBothVersions) {
  Registry registry;
  auto r = registry.loadFile(fixture("fixture-c-minor-newer"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, AllOf(HasSubstr("built for plugin ABI 1.7"),
                                       HasSubstr("newer than this kiln's ABI 1.0")));
}

TEST(RegistryTest, SmallerStructsOfAnOlderMinorLoadAndReadAsAbsentBeyondTheirSize) {
  Registry registry;
  ASSERT_TRUE(registry.loadFile(fixture("fixture-c-small")).ok());
  const PluginInfo* info = registry.find({PluginKind::kCodeAgent, "c-agent"});
  ASSERT_NE(info, nullptr);
  // The descriptor stops before `homepage`: the host must not read it.
  EXPECT_EQ(info->homepage, "");
  auto agent = mustCreate(registry, {PluginKind::kCodeAgent, "c-agent"});
  EXPECT_EQ(mustInvoke(*agent, Operation::kExecute, {{"prompt", "x"}})["output"], "c agent ran");
  // The CI table stops after trigger(): status() is absent although the
  // plugin's memory holds a pointer there.
  auto ci = mustCreate(registry, {PluginKind::kCiTrigger, "c-ci"});
  EXPECT_TRUE(ci->supports(Operation::kTrigger));
  EXPECT_FALSE(ci->supports(Operation::kStatus));
  auto templates = mustCreate(registry, {PluginKind::kTemplateProvider, "c-templates"});
  EXPECT_FALSE(templates->supports(Operation::kList));
}

TEST(RegistryTest, MissingEntrySymbolIsNamed) {
  Registry registry;
  auto r = registry.loadFile(fixture("fixture-no-entry"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, AllOf(HasSubstr("missing the entry symbol \"kiln_plugin_entry\""),
                                       HasSubstr("not a Kiln plugin")));
}

TEST(RegistryTest, AFileThatIsNotALibraryIsRefusedAndNamed) {
  TempDir dir;
  const fs::path bogus = dir.path() / "notes.so";
  std::ofstream(bogus) << "this is not an ELF file\n";
  Registry registry;
  std::vector<LoadError> errors;
  registry.loadDirectory(dir.path().string(), &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].file, bogus.string());
  EXPECT_THAT(errors[0].message, HasSubstr("not a loadable shared library"));
  EXPECT_THAT(errors[0].format(), HasSubstr(bogus.string() + ": "));
}

TEST(RegistryTest, UnknownKindIsNamedWithTheKindsThisHostKnows) {
  Registry registry;
  auto r = registry.loadFile(fixture("fixture-c-unknown-kind"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, AllOf(HasSubstr("plugin \"c-notifier\" has unknown kind "
                                                 "\"kiln.teleporter/1\""),
                                       HasSubstr("kiln.notifier/1")));
  EXPECT_TRUE(registry.list().empty()) << "a library is registered whole or not at all";
}

TEST(RegistryTest, ANullRequiredFunctionIsRefusedAtLoad) {
  Registry registry;
  auto r = registry.loadFile(fixture("fixture-c-null-execute"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("plugin \"c-agent\": its kiln.code-agent/1 table lacks "
                                           "the required first function"));
}

TEST(RegistryTest, DuplicateIdNamesBothFilesAndKeepsTheFirst) {
  TempDir dir;
  fs::copy_file(fixture("fixture-c"), dir.path() / "a.so");
  fs::copy_file(fixture("fixture-c"), dir.path() / "b.so");
  Registry registry;
  std::vector<LoadError> errors;
  registry.loadDirectory(dir.path().string(), &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].file, (dir.path() / "b.so").string());
  EXPECT_THAT(errors[0].message,
              AllOf(HasSubstr("duplicate plugin code-agent/c-agent"),
                    HasSubstr("already provided by " + (dir.path() / "a.so").string()),
                    HasSubstr("now also by " + (dir.path() / "b.so").string())));
  EXPECT_EQ(registry.find({PluginKind::kCodeAgent, "c-agent"})->file,
            (dir.path() / "a.so").string());
}

TEST(RegistryTest, MissingDirectoryIsAnError) {
  Registry registry;
  std::vector<LoadError> errors;
  registry.loadDirectory("/nonexistent/kiln-plugins", &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_THAT(errors[0].format(),
              HasSubstr("/nonexistent/kiln-plugins: plugin directory does not exist"));
}

TEST(RegistryTest, AnInstanceKeepsItsLibraryLoadedAfterTheRegistryIsGone) {
  std::shared_ptr<PluginInstance> agent;
  {
    Registry registry;
    ASSERT_TRUE(registry.loadFile(fixture("fixture-sdk")).ok());
    agent = mustCreate(registry, {PluginKind::kCodeAgent, "sdk-agent"});
  }
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(mustInvoke(*agent, Operation::kExecute, {{"prompt", "late"}})["output"],
            "sdk agent ran: late");
}

TEST(RegistryTest, ConcurrentCallsOnOneInstanceAreSafe) {
  Registry registry;
  ASSERT_TRUE(registry.loadFile(fixture("fixture-sdk")).ok());
  auto agent = mustCreate(registry, {PluginKind::kCodeAgent, "sdk-agent"});
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (agent->invoke(Operation::kExecute, R"({"prompt":"p"})").ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 200);
}

TEST(RegistryTest, BundledPluginsProvideEveryKind) {
  Registry registry;
  std::vector<LoadError> errors;
  registry.loadDirectory(KILN_BUNDLED_PLUGIN_DIR, &errors);
  for (const auto& e : errors) ADD_FAILURE() << e.format();
  for (PluginKind kind : domain::kAllPluginKinds) {
    const auto plugins = registry.list();
    EXPECT_TRUE(std::any_of(plugins.begin(), plugins.end(),
                            [&](const PluginInfo* p) { return p->ref.kind == kind; }))
        << "no bundled " << domain::pluginKindName(kind);
  }
}

}  // namespace
}  // namespace kiln::plugins
