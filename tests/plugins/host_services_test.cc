// The real run_process and http_request handlers boot() gives plugins: the
// ABI's JSON documents in and out, with real processes and a local server.
#include "host_services.h"

#include <atomic>
#include <chrono>
#include <mutex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln/plugin.h"
#include "local_http_server.h"

namespace {

using kiln::ErrorCode;
using kiln::plugins::CallOptions;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

json mustRun(const kiln::plugins::HostServices::Handler& h, const json& request,
             const CallOptions& options = {}) {
  auto r = h(request.dump(), options);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? json::parse(*r) : json::object();
}

TEST(RunProcessServiceTest, AnswersWithEveryResultField) {
  const auto run = kiln::app::makeRunProcessHandler();
  const json r = mustRun(
      run,
      {{"argv", {"/bin/sh", "-c", "cat; echo err >&2; exit 4"}}, {"stdin", "in"}, {"cwd", "/"}});
  EXPECT_EQ(r["exit_code"], 4);
  EXPECT_EQ(r["signal"], 0);
  EXPECT_EQ(r["stdout"], "in");
  EXPECT_EQ(r["stderr"], "err\n");
  EXPECT_EQ(r["timed_out"], false);
  EXPECT_EQ(r["cancelled"], false);
  EXPECT_EQ(r["truncated"], false);
  EXPECT_TRUE(r["duration_ms"].is_number_integer());
}

TEST(RunProcessServiceTest, TheChildSeesTheAllowListAndTheRequestOnly) {
  ::setenv("KILN_TEST_SECRET", "leaked", 1);
  ::setenv("HOME", "/home/kiln-test", 1);
  const auto run = kiln::app::makeRunProcessHandler();
  ::unsetenv("KILN_TEST_SECRET");
  const json r =
      mustRun(run, {{"argv", {"/usr/bin/env"}}, {"env", {{"EXTRA", "1"}, {"HOME", "/override"}}}});
  const std::string out = r["stdout"];
  EXPECT_THAT(out, HasSubstr("EXTRA=1\n"));
  EXPECT_THAT(out, HasSubstr("HOME=/override\n")) << "the request wins";
  EXPECT_THAT(out, HasSubstr("PATH="));
  EXPECT_THAT(out, Not(HasSubstr("KILN_TEST_SECRET")));

  kiln::app::ProcessServiceOptions only_path;
  only_path.env_allow_list = {"PATH"};
  const json narrow = mustRun(kiln::app::makeRunProcessHandler(only_path), {{"argv", {"env"}}});
  EXPECT_EQ(narrow["stdout"], "PATH=" + std::string(::getenv("PATH")) + "\n");
}

TEST(RunProcessServiceTest, StreamsOutputAsEventsUnlessAskedNotTo) {
  const auto run = kiln::app::makeRunProcessHandler();
  std::mutex mu;
  std::vector<std::pair<int32_t, std::string>> events;
  CallOptions options;
  options.on_event = [&](int32_t kind, std::string_view payload) {
    std::lock_guard<std::mutex> lock(mu);
    events.emplace_back(kind, std::string(payload));
  };
  mustRun(run, {{"argv", {"/bin/sh", "-c", "echo out; sleep 0.1; echo err >&2"}}}, options);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], (std::pair<int32_t, std::string>{KILN_EVENT_OUTPUT, "out\n"}));
  EXPECT_EQ(events[1], (std::pair<int32_t, std::string>{KILN_EVENT_OUTPUT, "err\n"}));
  events.clear();
  mustRun(run, {{"argv", {"/bin/echo", "quiet"}}, {"stream_output", false}}, options);
  EXPECT_TRUE(events.empty());
}

TEST(RunProcessServiceTest, HonoursTimeoutAndCancellation) {
  const auto run = kiln::app::makeRunProcessHandler();
  json r = mustRun(run, {{"argv", {"/bin/sleep", "30"}}, {"timeout_ms", 200}});
  EXPECT_EQ(r["timed_out"], true);
  EXPECT_EQ(r["signal"], SIGTERM);

  CallOptions options;
  const auto cancel_at = std::chrono::steady_clock::now() + 200ms;
  options.is_cancelled = [&] { return std::chrono::steady_clock::now() >= cancel_at; };
  r = mustRun(run, {{"argv", {"/bin/sleep", "30"}}}, options);
  EXPECT_EQ(r["cancelled"], true);
  EXPECT_LT(std::chrono::steady_clock::now() - cancel_at, 2s);
}

TEST(RunProcessServiceTest, OutputThatIsNotUtf8StillMakesValidJson) {
  const auto run = kiln::app::makeRunProcessHandler();
  const json r = mustRun(run, {{"argv", {"/usr/bin/printf", "a\\377b"}}});
  EXPECT_EQ(r["stdout"],
            "a\xEF\xBF\xBD"
            "b");
}

TEST(RunProcessServiceTest, BadRequestsNameTheField) {
  const auto run = kiln::app::makeRunProcessHandler();
  struct Case {
    std::string request;
    std::string field;
  };
  const std::vector<Case> cases = {
      {R"({"argv": []})", "argv"},
      {R"({"cwd": "/"})", "argv"},
      {R"({"argv": ["/bin/true", 3]})", "argv"},
      {R"({"argv": ["/bin/true"], "cwd": "relative/dir"})", "cwd"},
      {R"({"argv": ["/bin/true"], "env": {"A": 1}})", "env"},
      {R"({"argv": ["/bin/true"], "env": ["A=1"]})", "env"},
      {R"({"argv": ["/bin/true"], "stdin": 5})", "stdin"},
      {R"({"argv": ["/bin/true"], "timeout_ms": 0})", "timeout_ms"},
      {R"({"argv": ["/bin/true"], "timeout_ms": 86400001})", "timeout_ms"},
      {R"({"argv": ["/bin/true"], "timeout_ms": "10"})", "timeout_ms"},
      {R"({"argv": ["/bin/true"], "stream_output": "yes"})", "stream_output"},
  };
  for (const auto& c : cases) {
    auto r = run(c.request, {});
    ASSERT_FALSE(r.ok()) << c.request;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << c.request;
    EXPECT_THAT(r.error().message, HasSubstr("run_process request: \"" + c.field + "\""))
        << c.request;
    ASSERT_EQ(r.error().fields.size(), 1u);
    EXPECT_EQ(r.error().fields[0].first, c.field);
  }
  auto not_json = run("{argv", {});
  ASSERT_FALSE(not_json.ok());
  EXPECT_EQ(not_json.error().message, "run_process request: not a JSON object");

  auto missing = run(R"({"argv": ["/nonexistent/tool"]})", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(missing.error().message, "cannot run /nonexistent/tool: No such file or directory");
}

void echo(Poco::Net::HTTPServerRequest& req, Poco::Net::HTTPServerResponse& res) {
  std::string body(std::istreambuf_iterator<char>(req.stream()), {});
  if (req.getURI() == "/moved") {
    res.setStatus(Poco::Net::HTTPResponse::HTTP_MOVED_PERMANENTLY);
    res.set("Location", "/final");
    res.send();
    return;
  }
  res.setStatus(Poco::Net::HTTPResponse::HTTP_CREATED);
  res.set("X-Seen", req.get("X-Token", "-"));
  res.send() << req.getMethod() << " " << req.getURI() << " " << body;
}

TEST(HttpRequestServiceTest, TranslatesTheAbiDocuments) {
  kiln::testing::LocalHttpServer server(echo);
  const auto http = kiln::app::makeHttpRequestHandler();
  const json r = mustRun(http, {{"method", "PUT"},
                                {"url", server.url("/items/1")},
                                {"headers", {{"X-Token", "abc"}}},
                                {"body", "payload"},
                                {"timeout_ms", 5000}});
  EXPECT_EQ(r["status"], 201);
  EXPECT_EQ(r["body"], "PUT /items/1 payload");
  EXPECT_EQ(r["headers"]["X-Seen"], "abc");

  EXPECT_EQ(mustRun(http, {{"url", server.url("/moved")}})["status"], 301);
  const json followed = mustRun(http, {{"url", server.url("/moved")}, {"follow_redirects", true}});
  EXPECT_EQ(followed["status"], 201);
  EXPECT_EQ(followed["body"], "GET /final ");
}

TEST(HttpRequestServiceTest, ErrorsKeepTheirKind) {
  const auto http = kiln::app::makeHttpRequestHandler();
  auto r = http(R"({"method": "GET"})", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(r.error().message, HasSubstr("\"url\""));
  r = http(R"({"url": "http://127.0.0.1:1/", "timeout_ms": -1})", {});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("\"timeout_ms\""));
  r = http(R"({"url": "http://127.0.0.1:1/"})", {});  // nothing listens on port 1
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_TRUE(r.error().retryable);
}

}  // namespace
