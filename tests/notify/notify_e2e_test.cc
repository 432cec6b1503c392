// Signed callbacks end to end: a real `kiln serve` on each store with the
// bundled webhook notifier, a real receiver (a Poco HTTP server on a free
// port) that can be down, fail, then recover, and an independent signature
// check (verify_webhook.py). Needs the host's real http_request service.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/StreamCopier.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln_server.h"
#include "subprocess.h"

#include "eventually.h"

namespace {

using kiln::testing::KilnServer;
using kiln::testing::TestDatabase;
using nlohmann::json;
using ::testing::HasSubstr;

const std::string kKiln = KILN_BINARY;
const std::string kVerifier = KILN_WEBHOOK_VERIFIER;
const std::string kSecret = "whsec_8zX1rOVYcUOlfRUiwmRCNqKPwl9h6Z2s3Iz5eDOpYd8=";

using kiln::testing::eventually;

std::string scratchDir(const std::string& what) {
  auto dir = std::filesystem::temp_directory_path() /
             ("kiln-notify-" + what + "-" + std::to_string(getpid()) + "-" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

// "valid", or what the independent verifier said.
std::string verify(const std::string& id, const std::string& timestamp, const std::string& body,
                   const std::string& signature) {
  const std::string path = scratchDir("body") + "/body.json";
  std::ofstream(path, std::ios::binary) << body;
  const auto r =
      kiln::testing::run({KILN_PYTHON, kVerifier, kSecret, id, timestamp, path, signature});
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
  std::string out = r.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return r.code == 0 ? out : out + r.err;
}

// A webhook receiver: records every request; answers what `status_for`
// says for the n-th request (0-based).
class Receiver {
 public:
  struct Hit {
    std::string method;
    std::string uri;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
  };

  // Listens on `port` (0: any free port).
  explicit Receiver(
      uint16_t port = 0, std::function<int(int)> status_for = [](int) { return 204; })
      : status_for_(std::move(status_for)) {
    Poco::Net::ServerSocket socket;
    socket.bind(Poco::Net::SocketAddress("127.0.0.1", port), /*reuseAddress=*/true);
    socket.listen();
    port_ = socket.address().port();
    auto params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(4);
    server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(this), socket, params);
    server_->start();
  }
  ~Receiver() { server_->stopAll(true); }

  uint16_t port() const { return port_; }
  std::vector<Hit> hits() const {
    std::lock_guard<std::mutex> lock(mu_);
    return hits_;
  }

 private:
  class Handler : public Poco::Net::HTTPRequestHandler {
   public:
    explicit Handler(Receiver* r) : r_(r) {}
    void handleRequest(Poco::Net::HTTPServerRequest& req,
                       Poco::Net::HTTPServerResponse& resp) override {
      Hit hit;
      hit.method = req.getMethod();
      hit.uri = req.getURI();
      for (const auto& [name, value] : req) {
        std::string lower = name;
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        hit.headers[lower] = value;
      }
      Poco::StreamCopier::copyToString(req.stream(), hit.body);
      int index;
      {
        std::lock_guard<std::mutex> lock(r_->mu_);
        index = static_cast<int>(r_->hits_.size());
        r_->hits_.push_back(std::move(hit));
      }
      const int status = r_->status_for_(index);
      resp.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(status));
      if (status == 204) {
        resp.setContentLength(0);
        resp.send();
      } else {
        const std::string body = "receiver says " + std::to_string(status);
        resp.setContentType("text/plain");
        resp.setContentLength(static_cast<std::streamsize>(body.size()));
        resp.send() << body;
      }
    }

   private:
    Receiver* r_;
  };
  class Factory : public Poco::Net::HTTPRequestHandlerFactory {
   public:
    explicit Factory(Receiver* r) : r_(r) {}
    Poco::Net::HTTPRequestHandler* createRequestHandler(
        const Poco::Net::HTTPServerRequest&) override {
      return new Handler(r_);
    }

   private:
    Receiver* r_;
  };

  std::function<int(int)> status_for_;
  uint16_t port_ = 0;
  std::unique_ptr<Poco::Net::HTTPServer> server_;
  mutable std::mutex mu_;
  std::vector<Hit> hits_;
};

// A free port nobody listens on (for a receiver that is down).
uint16_t freePort() {
  Poco::Net::ServerSocket s(Poco::Net::SocketAddress("127.0.0.1", 0));
  const uint16_t port = s.address().port();
  s.close();
  return port;
}

// A bare repository with one commit on main, for builds to clone.
std::string makeRepository(const std::string& dir) {
  const std::string bare = dir + "/demo.git";
  const std::string work = dir + "/work";
  const std::map<std::string, std::string> env = {{"GIT_AUTHOR_NAME", "t"},
                                                  {"GIT_AUTHOR_EMAIL", "t@example.test"},
                                                  {"GIT_COMMITTER_NAME", "t"},
                                                  {"GIT_COMMITTER_EMAIL", "t@example.test"}};
  const std::string git = KILN_GIT;
  std::filesystem::create_directories(work);
  std::ofstream(work + "/README.md") << "hello\n";
  for (const auto& argv :
       std::vector<std::vector<std::string>>{{git, "init", "-q", "--bare", "-b", "main", bare},
                                             {git, "init", "-q", "-b", "main", work},
                                             {git, "-C", work, "add", "README.md"},
                                             {git, "-C", work, "commit", "-q", "-m", "init"},
                                             {git, "-C", work, "push", "-q", bare, "main"}}) {
    const auto r = kiln::testing::run(argv, env);
    if (r.code != 0) throw std::runtime_error("git " + argv[1] + " failed: " + r.err);
  }
  return bare;
}

class NotifyE2E : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = scratchDir("e2e");
    std::ofstream(dir_ + "/webhook-secret") << kSecret << "\n";
    repo_ = makeRepository(dir_);
    std::string store = "store:\n  sqlite:\n    path: " + dir_ + "/kiln.db\n";
    if (GetParam() == "postgres") {
      db_ = std::make_unique<TestDatabase>();
      store = "store:\n  postgres:\n    url: " + db_->url() + "\n";
    }
    server_ = std::make_unique<KilnServer>(kKiln, R"(server:
  listen: 127.0.0.1:0
  workers: 2
  lease_s: 3
  shutdown_grace_s: 2
  delivery_backoff_s: 1
)" + store + R"(instances:
  agent:
    plugin: code-agent/noop
  hook:
    plugin: notifier/webhook
    config:
      secret_file: )" + dir_ + R"(/webhook-secret
      timeout_ms: 3000
  log:
    plugin: notifier/log
defaults:
  agent: agent
  notifiers: [hook, log]
projects:
  demo:
    repo_url: )" + repo_ + "\n");
  }
  void TearDown() override {
    server_.reset();
    db_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string submit(const json& spec) {
    const auto r = server_->post("/projects/demo/builds", spec);
    EXPECT_EQ(r.status, 202) << r.body;
    return r.status == 202 ? json::parse(r.body)["task_id"].get<std::string>() : "";
  }

  json deliveries(const std::string& task_id) {
    const auto r = server_->get("/builds/" + task_id + "/deliveries");
    EXPECT_EQ(r.status, 200) << r.body;
    return r.status == 200 ? json::parse(r.body)["deliveries"] : json::array();
  }

  // The delivery of `notifier` among a build's deliveries (null if none).
  json deliveryOf(const std::string& task_id, const std::string& notifier) {
    for (const json& d : deliveries(task_id)) {
      if (d["notifier"] == notifier) return d;
    }
    return nullptr;
  }

  // Asserts that `hit` is a correctly signed Standard Webhooks request for
  // `build`, and returns its webhook-id.
  std::string checkSignedCallback(const Receiver::Hit& hit, const json& build) {
    EXPECT_EQ(hit.method, "POST");
    EXPECT_EQ(hit.headers.at("content-type"), "application/json");
    const std::string id = hit.headers.at("webhook-id");
    const std::string ts = hit.headers.at("webhook-timestamp");
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    EXPECT_NEAR(std::stoll(ts), now, 60);
    EXPECT_EQ(verify(id, ts, hit.body, hit.headers.at("webhook-signature")), "valid") << hit.body;
    const json event = json::parse(hit.body);
    EXPECT_EQ(event["type"], "build." + build["status"].get<std::string>());
    EXPECT_FALSE(event["timestamp"].get<std::string>().empty());
    EXPECT_EQ(event["data"]["task_id"], build["task_id"]);
    EXPECT_EQ(event["data"]["project_id"], "demo");
    EXPECT_EQ(event["data"]["status"], build["status"]);
    EXPECT_EQ(event["data"]["result"], build["result"]);  // the full BuildResult
    return id;
  }

  std::string dir_;
  std::string repo_;
  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<KilnServer> server_;
};

TEST_P(NotifyE2E, TheCallbackIsSignedAndEveryDeliveryIsListed) {
  Receiver receiver;
  const std::string callback =
      "http://127.0.0.1:" + std::to_string(receiver.port()) + "/hooks/kiln?k=1";
  const std::string id = submit({{"prompt", "add a README"}, {"callback_url", callback}});
  const json build = server_->waitForTerminal(id);
  ASSERT_EQ(build["status"], "completed") << build.dump(2);

  ASSERT_TRUE(eventually([&] { return receiver.hits().size() == 1; }, std::chrono::seconds(15)))
      << deliveries(id).dump(2);
  const Receiver::Hit hit = receiver.hits()[0];
  EXPECT_EQ(hit.uri, "/hooks/kiln?k=1");
  EXPECT_EQ(checkSignedCallback(hit, build), "msg_" + id + "_hook");

  ASSERT_TRUE(eventually(
      [&] {
        const json d = deliveryOf(id, "log");
        return d.is_object() && d["state"] == "delivered";
      },
      std::chrono::seconds(10)));
  const json list = deliveries(id);
  ASSERT_EQ(list.size(), 2u) << list.dump(2);
  const json hook = deliveryOf(id, "hook");
  EXPECT_EQ(hook["state"], "delivered");
  EXPECT_EQ(hook["event_id"], "msg_" + id + "_hook");
  EXPECT_EQ(hook["target"], callback);
  EXPECT_TRUE(hook["next_attempt_at"].is_null());
  EXPECT_TRUE(hook["last_error"].is_null());
  ASSERT_EQ(hook["attempts"].size(), 1u);
  EXPECT_EQ(hook["attempts"][0]["attempt"], 1);
  EXPECT_EQ(hook["attempts"][0]["ok"], true);
  EXPECT_EQ(hook["attempts"][0]["detail"], "HTTP 204");
  EXPECT_GE(hook["attempts"][0]["duration_ms"].get<int64_t>(), 0);
  const json log = deliveryOf(id, "log");
  EXPECT_EQ(log["attempts"][0]["detail"], "written to the kiln log");

  // Without a callback_url the webhook (which has no url of its own) sends
  // nothing; the log notifier still gets the event.
  const std::string quiet = submit({{"prompt", "no callback"}});
  server_->waitForTerminal(quiet);
  ASSERT_TRUE(eventually(
      [&] {
        const json d = deliveryOf(quiet, "log");
        return d.is_object() && d["state"] == "delivered";
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(deliveries(quiet).size(), 1u);
  EXPECT_EQ(receiver.hits().size(), 1u);

  const auto unknown = server_->get("/builds/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/deliveries");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
}

TEST_P(NotifyE2E, AReceiverThatIsDownThenFailsIsDeliveredOnceItRecoversUnderOneWebhookId) {
  const uint16_t port = freePort();
  const std::string callback = "http://127.0.0.1:" + std::to_string(port) + "/cb";
  const std::string id = submit({{"prompt", "p"}, {"callback_url", callback}});
  const json build = server_->waitForTerminal(id);

  // Down: the first attempt fails and a retry is scheduled.
  ASSERT_TRUE(eventually(
      [&] {
        const json d = deliveryOf(id, "hook");
        return d.is_object() && !d["attempts"].empty();
      },
      std::chrono::seconds(15)));
  const json down = deliveryOf(id, "hook");
  EXPECT_EQ(down["state"], "pending") << down.dump(2);
  EXPECT_EQ(down["attempts"][0]["ok"], false);
  EXPECT_FALSE(down["next_attempt_at"].is_null());
  EXPECT_FALSE(down["last_error"].is_null());

  // Up, but failing once, then well.
  Receiver receiver(port, [](int n) { return n == 0 ? 500 : 204; });
  ASSERT_TRUE(eventually([&] { return deliveryOf(id, "hook")["state"] == "delivered"; },
                         std::chrono::seconds(30)))
      << deliveryOf(id, "hook").dump(2);

  const auto hits = receiver.hits();
  ASSERT_EQ(hits.size(), 2u);
  const std::string first_id = checkSignedCallback(hits[0], build);
  EXPECT_EQ(checkSignedCallback(hits[1], build), first_id);  // one webhook-id
  EXPECT_EQ(first_id, "msg_" + id + "_hook");
  EXPECT_EQ(hits[0].body, hits[1].body);

  const json done = deliveryOf(id, "hook");
  const json& attempts = done["attempts"];
  ASSERT_GE(attempts.size(), 3u) << done.dump(2);
  for (size_t i = 0; i < attempts.size(); ++i) {
    EXPECT_EQ(attempts[i]["attempt"], i + 1);
    EXPECT_EQ(attempts[i]["ok"], i + 1 == attempts.size());
  }
  EXPECT_THAT(attempts[attempts.size() - 2]["detail"].get<std::string>(),
              HasSubstr("HTTP 500 from " + callback + ": receiver says 500"));
  EXPECT_EQ(attempts.back()["detail"], "HTTP 204");
  EXPECT_TRUE(done["last_error"].is_null());
  EXPECT_TRUE(done["next_attempt_at"].is_null());
}

INSTANTIATE_TEST_SUITE_P(Stores, NotifyE2E, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
