// The SDK's FakeHost, used the way a plugin author would: the plugin is
// compiled into the test binary and driven through the real C ABI.
#include "kiln/sdk/testing.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

using kiln::sdk::testing::FakeHost;
using kiln::sdk::testing::Op;
using nlohmann::json;
using ::testing::HasSubstr;

// A plugin an author might write: it calls an HTTP API with a secret token.
class PingNotifier : public kiln::sdk::Notifier {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{"ping", "Ping", "1.0.0", "Pings a URL",
                                               R"({"type": "object"})"};
  PingNotifier(kiln::sdk::Call&, std::string_view config) : url_(json::parse(config).at("url")) {}

  std::string notify(kiln::sdk::Call& call, std::string_view) override {
    const auto token = call.secret("ping_token");
    if (!token)
      throw kiln::sdk::Error("secret ping_token is not configured", KILN_ERR_INVALID_ARGUMENT);
    const json response = json::parse(call.httpRequest(json{
        {"method", "POST"}, {"url", url_}, {"headers", {{"Authorization", "Bearer " + *token}}}}
                                                           .dump()));
    call.output("pinged " + url_ + "\n");
    const int status = response.at("status");
    if (status >= 500)
      throw kiln::sdk::Error("server error " + std::to_string(status), KILN_ERR_UNAVAILABLE, true);
    return json{{"delivered", status < 300}, {"detail", "HTTP " + std::to_string(status)}}.dump();
  }

 private:
  std::string url_;
};

class Counter : public kiln::sdk::CiTrigger {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{"counter",
                                               "Counter",
                                               "1.0.0",
                                               "Counts",
                                               R"({"type": "object"})",
                                               KILN_PLUGIN_FLAG_SERIALIZED};
  Counter(kiln::sdk::Call&, std::string_view) {}
  std::string trigger(kiln::sdk::Call&, std::string_view) override {
    return json{{"run_id", std::to_string(++n_)}, {"status", "queued"}}.dump();
  }

 private:
  int n_ = 0;
};

}  // namespace

KILN_PLUGIN_LIBRARY("author-test", "1.0.0", PingNotifier, Counter)

namespace {

TEST(SdkFakeHostTest, DrivesAPluginThroughTheAbiWithScriptedServices) {
  FakeHost host;
  host.secrets["ping_token"] = "t0k";
  std::string seen_request;
  host.http = [&](std::string_view request) {
    seen_request = std::string(request);
    return kiln::sdk::testing::ServiceReply{KILN_OK,
                                            R"({"status": 204, "headers": {}, "body": ""})"};
  };
  auto ping = host.create("ping", R"({"url": "http://hooks.invalid/x"})");
  ASSERT_NE(ping, nullptr);
  EXPECT_STREQ(ping->descriptor().kind, KILN_KIND_NOTIFIER_V1);
  auto out = ping->call(Op::kNotify, R"({"event": {"type": "build.completed"}})");
  ASSERT_TRUE(out.ok()) << out.error;
  EXPECT_EQ(json::parse(out.result), (json{{"delivered", true}, {"detail", "HTTP 204"}}));
  EXPECT_EQ(json::parse(seen_request)["headers"]["Authorization"], "Bearer t0k");
  ASSERT_EQ(host.events().size(), 1u);
  EXPECT_EQ(host.events()[0].payload, "pinged http://hooks.invalid/x\n");
}

TEST(SdkFakeHostTest, ReportsErrorsWithCodeAndRetryability) {
  FakeHost host;
  auto ping = host.create("ping", R"({"url": "http://hooks.invalid/x"})");
  auto missing = ping->call(Op::kNotify, "{}");
  EXPECT_EQ(missing.status, KILN_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(missing.error, "secret ping_token is not configured");

  host.secrets["ping_token"] = "t";
  host.http = [](std::string_view) {
    return kiln::sdk::testing::ServiceReply{KILN_OK, R"({"status": 503})"};
  };
  auto down = ping->call(Op::kNotify, "{}");
  EXPECT_EQ(down.status, KILN_ERR_UNAVAILABLE);
  EXPECT_TRUE(down.retryable);

  // An unscripted service answers unavailable, as a host without it would.
  host.http = nullptr;
  auto unscripted = ping->call(Op::kNotify, "{}");
  EXPECT_EQ(unscripted.status, KILN_ERR_UNAVAILABLE);
}

TEST(SdkFakeHostTest, CreateFailuresAndUnknownIds) {
  FakeHost host;
  kiln::sdk::testing::Outcome why;
  EXPECT_EQ(host.create("ping", "{}", &why), nullptr);  // "url" missing: json::at throws
  EXPECT_EQ(why.status, KILN_ERR_INTERNAL);
  EXPECT_THAT(why.error, HasSubstr("uncaught exception"));
  EXPECT_EQ(host.create("nope", "{}", &why), nullptr);
  EXPECT_EQ(why.status, KILN_ERR_NOT_FOUND);
}

TEST(SdkFakeHostTest, FlagsAndOptionalFunctionsReachTheDescriptor) {
  FakeHost host;
  auto counter = host.create("counter");
  ASSERT_NE(counter, nullptr);
  EXPECT_EQ(counter->descriptor().flags, KILN_PLUGIN_FLAG_SERIALIZED);
  EXPECT_TRUE(counter->supports(Op::kTrigger));
  EXPECT_FALSE(counter->supports(Op::kStatus));
  EXPECT_FALSE(counter->supports(Op::kNotify));
  EXPECT_EQ(json::parse(counter->call(Op::kTrigger, "{}").result)["run_id"], "1");
  EXPECT_EQ(json::parse(counter->call(Op::kTrigger, "{}").result)["run_id"], "2");
}

}  // namespace
