// notifier/webhook through the real C ABI with the SDK's FakeHost scripting
// the host's http_request service. Signatures are checked by an independent
// implementation (verify_webhook.py: Python's hmac), never by the plugin's
// own code.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln/sdk/testing.hpp"
#include "subprocess.h"

namespace {

using kiln::sdk::testing::FakeHost;
using kiln::sdk::testing::Op;
using kiln::sdk::testing::ServiceReply;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

// 32 random bytes, as `openssl rand -base64 32` makes them.
const std::string kSecret = "whsec_q83vNOW9ISDdHmh4Ylq8Ob3a+M+DH3ck8YTXkpmIsoA=";
const std::string kVerifier = KILN_WEBHOOK_VERIFIER;

// Runs the independent verifier over the exact body bytes; "valid" or why not.
std::string verify(const std::string& secret, const std::string& id, const std::string& timestamp,
                   const std::string& body, const std::string& signature) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("kiln-webhook-body-" + std::to_string(getpid()) + ".json");
  std::ofstream(path, std::ios::binary) << body;
  const auto r =
      kiln::testing::run({KILN_PYTHON, kVerifier, secret, id, timestamp, path.string(), signature});
  std::filesystem::remove(path);
  std::string out = r.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return r.code == 0 ? out : out + r.err;
}

// The request the host builds for notify(): the event with its id, and the
// build's callback_url as the target.
std::string request(const std::string& target = "http://127.0.0.1:9/hooks/kiln?token=abc") {
  std::string r =
      R"({"event":{"id":"msg_0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b_hook","type":"build.completed",)"
      R"("timestamp":"2026-03-01T10:00:00.000Z","data":{"task_id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",)"
      R"("project_id":"demo","status":"completed","error_kind":null,"result":{"success":true,)"
      R"("output":"wrote README.md \u00e9\u00e8","commit_sha":"abc"}}}})";
  if (!target.empty()) r.insert(r.size() - 1, R"(,"target":")" + target + "\"");
  return r;
}

class WebhookPluginTest : public ::testing::Test {
 protected:
  // Scripts http_request to answer `status` (and record each request).
  void answer(int status, const std::string& body = "", json headers = json::object()) {
    host_.http = [this, status, body, headers](std::string_view req) -> ServiceReply {
      std::lock_guard<std::mutex> lock(mu_);
      sent_.push_back(json::parse(req));
      return {KILN_OK, json{{"status", status}, {"headers", headers}, {"body", body}}.dump()};
    };
  }
  std::unique_ptr<FakeHost::Instance> create(json config) {
    kiln::sdk::testing::Outcome failure;
    auto inst = host_.create("webhook", config.dump(), &failure);
    EXPECT_NE(inst, nullptr) << failure.error;
    return inst;
  }
  std::vector<json> sent() {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_;
  }

  FakeHost host_;
  std::mutex mu_;
  std::vector<json> sent_;
};

TEST_F(WebhookPluginTest, PostsTheEventSignedPerStandardWebhooks) {
  answer(204);
  auto hook = create({{"secret", kSecret}, {"headers", {{"X-Team", "builds"}}}});
  ASSERT_NE(hook, nullptr);
  const auto before = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const auto out = hook->call(Op::kNotify, request());
  ASSERT_TRUE(out.ok()) << out.error;
  EXPECT_EQ(json::parse(out.result), (json{{"delivered", true}, {"detail", "HTTP 204"}}));

  ASSERT_EQ(sent().size(), 1u);
  const json r = sent()[0];
  EXPECT_EQ(r["method"], "POST");
  EXPECT_EQ(r["url"], "http://127.0.0.1:9/hooks/kiln?token=abc");  // the build's callback_url
  EXPECT_EQ(r["follow_redirects"], false);
  EXPECT_EQ(r["timeout_ms"], 10000);
  const json& h = r["headers"];
  EXPECT_EQ(h["content-type"], "application/json");
  EXPECT_EQ(h["x-team"], "builds");
  EXPECT_EQ(h["webhook-id"], "msg_0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b_hook");
  const std::string ts = h["webhook-timestamp"];
  EXPECT_NEAR(std::stoll(ts), before, 5);
  const std::string sig = h["webhook-signature"];
  EXPECT_EQ(sig.rfind("v1,", 0), 0u) << sig;

  // The body: {type, timestamp, data} in that order, without the id.
  const std::string body = r["body"];
  EXPECT_EQ(
      body.rfind(R"({"type":"build.completed","timestamp":"2026-03-01T10:00:00.000Z","data":{)", 0),
      0u)
      << body;
  const json event = json::parse(body);
  EXPECT_FALSE(event.contains("id"));
  EXPECT_EQ(event["data"]["result"]["output"], "wrote README.md \u00e9\u00e8");
  EXPECT_EQ(verify(kSecret, h["webhook-id"], ts, body, sig), "valid");
  // A different secret does not verify: the verifier can fail.
  EXPECT_THAT(verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", h["webhook-id"], ts, body, sig),
              HasSubstr("invalid"));
}

TEST_F(WebhookPluginTest, EveryAttemptCarriesTheSameIdAndAValidSignature) {
  answer(200);
  auto hook = create({{"secret", kSecret}});
  ASSERT_NE(hook, nullptr);
  ASSERT_TRUE(hook->call(Op::kNotify, request()).ok());
  ASSERT_TRUE(hook->call(Op::kNotify, request()).ok());
  ASSERT_EQ(sent().size(), 2u);
  for (const json& r : sent()) {
    const json& h = r["headers"];
    EXPECT_EQ(h["webhook-id"], sent()[0]["headers"]["webhook-id"]);
    EXPECT_EQ(r["body"], sent()[0]["body"]);
    EXPECT_EQ(
        verify(kSecret, h["webhook-id"], h["webhook-timestamp"], r["body"], h["webhook-signature"]),
        "valid");
  }
}

TEST_F(WebhookPluginTest, AConfiguredUrlWinsOverTheTarget) {
  answer(202);
  auto hook = create(
      {{"secret", kSecret}, {"url", "https://hooks.example.test/kiln"}, {"timeout_ms", 2500}});
  ASSERT_NE(hook, nullptr);
  const auto out = hook->call(Op::kNotify, request());
  ASSERT_TRUE(out.ok()) << out.error;
  EXPECT_EQ(json::parse(out.result)["detail"], "HTTP 202");
  EXPECT_EQ(sent().at(0)["url"], "https://hooks.example.test/kiln");
  EXPECT_EQ(sent().at(0)["timeout_ms"], 2500);
  // With its own url it needs no target at all.
  ASSERT_TRUE(hook->call(Op::kNotify, request("")).ok());
}

TEST_F(WebhookPluginTest, AServerErrorIsARetryableFailureQuotingTheAnswer) {
  const std::string long_body = "boom " + std::string(300, 'x');
  answer(500, long_body);
  auto hook = create({{"secret", kSecret}, {"url", "https://user:pw@hooks.example.test/k?t=1"}});
  ASSERT_NE(hook, nullptr);
  const auto out = hook->call(Op::kNotify, request());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status, KILN_ERR_UNAVAILABLE);
  EXPECT_TRUE(out.retryable);
  EXPECT_THAT(out.error, HasSubstr("HTTP 500 from https://hooks.example.test/k: boom xxx"));
  EXPECT_THAT(out.error, HasSubstr(long_body.substr(0, 200) + "..."));
  EXPECT_THAT(out.error, Not(HasSubstr(long_body.substr(0, 201))));
  // Credentials and the query string stay out of messages.
  EXPECT_THAT(out.error, Not(HasSubstr("pw@")));
  EXPECT_THAT(out.error, Not(HasSubstr("t=1")));
}

TEST_F(WebhookPluginTest, AClientErrorIsRetriedButGoneIsNot) {
  auto hook = create({{"secret", kSecret}});
  ASSERT_NE(hook, nullptr);
  answer(404, "no such route");
  auto out = hook->call(Op::kNotify, request());
  EXPECT_EQ(out.status, KILN_ERR_UNAVAILABLE);
  EXPECT_TRUE(out.retryable);
  answer(429);
  out = hook->call(Op::kNotify, request());
  EXPECT_TRUE(out.retryable);
  answer(410, "endpoint retired");
  out = hook->call(Op::kNotify, request());
  EXPECT_EQ(out.status, KILN_ERR_FAILED);
  EXPECT_FALSE(out.retryable);
  EXPECT_THAT(out.error, HasSubstr("HTTP 410"));
  EXPECT_THAT(out.error, HasSubstr("not retrying"));
}

TEST_F(WebhookPluginTest, ARedirectIsAFailureAndIsNotFollowed) {
  answer(302, "", {{"Location", "https://elsewhere.example.test/hook?secret=1"}});
  auto hook = create({{"secret", kSecret}});
  ASSERT_NE(hook, nullptr);
  const auto out = hook->call(Op::kNotify, request());
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(out.retryable);
  EXPECT_THAT(out.error, HasSubstr("HTTP 302"));
  EXPECT_THAT(out.error, HasSubstr("redirects are not followed"));
  EXPECT_THAT(out.error, HasSubstr("https://elsewhere.example.test/hook"));
  ASSERT_EQ(sent().size(), 1u);
  EXPECT_EQ(sent()[0]["follow_redirects"], false);
}

TEST_F(WebhookPluginTest, ATransportFailureKeepsTheHostsError) {
  host_.http = [](std::string_view) -> ServiceReply {
    return {KILN_ERR_UNAVAILABLE, "connection refused by 127.0.0.1:9"};
  };
  auto hook = create({{"secret", kSecret}});
  ASSERT_NE(hook, nullptr);
  const auto out = hook->call(Op::kNotify, request());
  EXPECT_EQ(out.status, KILN_ERR_UNAVAILABLE);
  EXPECT_THAT(out.error, HasSubstr("connection refused"));
}

TEST_F(WebhookPluginTest, WithoutUrlOrTargetOrEventIdNothingIsSent) {
  answer(204);
  auto hook = create({{"secret", kSecret}});
  ASSERT_NE(hook, nullptr);
  auto out = hook->call(Op::kNotify, request(""));
  EXPECT_EQ(out.status, KILN_ERR_INVALID_ARGUMENT);
  EXPECT_FALSE(out.retryable);
  EXPECT_THAT(out.error, HasSubstr("callback_url"));
  out = hook->call(Op::kNotify, request("ftp://example.test/x"));
  EXPECT_EQ(out.status, KILN_ERR_INVALID_ARGUMENT);
  out = hook->call(Op::kNotify,
                   R"({"event":{"type":"build.failed","data":{}},"target":"http://x.test/"})");
  EXPECT_EQ(out.status, KILN_ERR_INVALID_ARGUMENT);
  EXPECT_THAT(out.error, HasSubstr("no id"));
  out = hook->call(Op::kNotify, R"({"event":{"id":"a.b","type":"t"},"target":"http://x.test/"})");
  EXPECT_EQ(out.status, KILN_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(sent().empty());
}

TEST_F(WebhookPluginTest, BadConfigurationsAreRefusedAtCreateWithoutShowingTheSecret) {
  auto refused = [&](const json& config) {
    kiln::sdk::testing::Outcome failure;
    EXPECT_EQ(host_.create("webhook", config.dump(), &failure), nullptr) << config.dump();
    EXPECT_EQ(failure.status, KILN_ERR_INVALID_ARGUMENT);
    return failure.error;
  };
  EXPECT_THAT(refused({{"secret", "hunter2hunter2hunter2hunter2"}}), HasSubstr("whsec_"));
  EXPECT_THAT(refused({{"secret", "whsec_not*base64!"}}), HasSubstr("base64"));
  const std::string too_short = refused({{"secret", "whsec_c2hvcnQ="}});
  EXPECT_THAT(too_short, HasSubstr("24 to 64"));
  EXPECT_THAT(too_short, Not(HasSubstr("c2hvcnQ")));
  EXPECT_THAT(refused({{"secret", kSecret}, {"headers", {{"Webhook-Id", "x"}}}}),
              HasSubstr("set by the notifier"));
  EXPECT_THAT(refused({{"secret", kSecret}, {"url", "ftp://example.test/"}}), HasSubstr("http"));
  // A secret read from a file keeps its trailing newline; that is fine.
  EXPECT_NE(create({{"secret", kSecret + "\n"}}), nullptr);
}

TEST(WebhookVerifierTest, TheIndependentVerifierKnowsTheSpecsTestVector) {
  // From the Standard Webhooks spec's reference libraries.
  EXPECT_EQ(
      verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1674087231",
             R"({"test": 2432232314})", "v1,AQG81rX2n4rTN1fkXoqILSHO9gAOcwya9dP41rhrQDI="),
      "valid");
}

}  // namespace
