// The build API end to end: a real `kiln serve` process on each store, real
// HTTP, the bundled plugins doing the (no-op) work.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln_server.h"

namespace {

using kiln::testing::KilnServer;
using kiln::testing::TestDatabase;
using nlohmann::json;
using ::testing::HasSubstr;

const std::string kKiln = KILN_BINARY;

std::string configFor(const std::string& store_section) {
  return R"(server:
  listen: 127.0.0.1:0
  workers: 2
  lease_s: 3
  shutdown_grace_s: 2
  max_body_bytes: 65536
)" + store_section +
         R"(
instances:
  agent:
    plugin: code-agent/noop
  slow:
    plugin: code-agent/noop
    config:
      delay_ms: 60000
  failing:
    plugin: code-agent/noop
    config:
      succeed: false
  templates:
    plugin: template-provider/filesystem
    config:
      directories: ["${KILN_TEMPLATE_DIR}"]
  local-git:
    plugin: git-host/local
    config:
      root: "${KILN_CONFIG_DIR}/repos"
defaults:
  agent: agent
  template_provider: templates
  git_host: local-git
projects:
  demo:
    repo_url: ${KILN_CONFIG_DIR}/repos/demo.git
    max_running_builds: 2
  slow:
    repo_url: ${KILN_CONFIG_DIR}/repos/slow.git
    agent: slow
    max_pending_builds: 2
    max_timeout_s: 600
  failing:
    repo_url: ${KILN_CONFIG_DIR}/repos/failing.git
    agent: failing
)";
}

class ApiTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    startServer();
    for (const char* repo : {"demo", "slow", "failing"}) {
      kiln::testing::makeBareRepository(server_->dir() + "/repos/" + repo + ".git");
    }
  }

  void startServer() {
    if (GetParam() == "postgres") {
      db_ = std::make_unique<TestDatabase>();
      server_ = std::make_unique<KilnServer>(
          kKiln, configFor("store:\n  postgres:\n    url: " + db_->url() + "\n"));
    } else {
      server_ =
          std::make_unique<KilnServer>(kKiln, configFor("store:\n  sqlite:\n    path: kiln.db\n"));
    }
  }
  void TearDown() override {
    server_.reset();
    db_.reset();
  }

  std::string submit(const std::string& project, const json& spec) {
    const auto r = server_->post("/projects/" + project + "/builds", spec);
    EXPECT_EQ(r.status, 202) << r.body;
    return r.status == 202 ? json::parse(r.body)["task_id"].get<std::string>() : "";
  }

  static json problemOf(const kiln::testing::HttpResult& r) {
    EXPECT_EQ(r.content_type, "application/problem+json") << r.body;
    const json p = json::parse(r.body);
    EXPECT_EQ(p["status"], r.status);
    EXPECT_TRUE(p["type"].get<std::string>().rfind("https://kiln.dev/problems/", 0) == 0);
    EXPECT_FALSE(p["title"].get<std::string>().empty());
    EXPECT_FALSE(p["detail"].get<std::string>().empty());
    return p;
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<KilnServer> server_;
};

TEST_P(ApiTest, SubmitAnswers202AndTheBuildCompletesWithItsAuditTrail) {
  const auto r = server_->post("/projects/demo/builds", {{"prompt", "add a README"}});
  ASSERT_EQ(r.status, 202) << r.body;
  const json accepted = json::parse(r.body);
  EXPECT_EQ(accepted["status"], "pending");
  EXPECT_EQ(accepted["project_id"], "demo");
  const std::string id = accepted["task_id"];
  EXPECT_EQ(accepted["links"]["self"], "/builds/" + id);
  EXPECT_EQ(r.headers.at("Location"), "/builds/" + id);

  const json build = server_->waitForTerminal(id);
  ASSERT_EQ(build["status"], "completed") << build.dump(2);
  EXPECT_EQ(build["result"]["success"], true);
  EXPECT_THAT(build["result"]["output"].get<std::string>(),
              HasSubstr("noop agent: received a prompt of 12 bytes"));
  EXPECT_EQ(build["attempts"], 1);
  EXPECT_EQ(build["branch"], "main");
  EXPECT_EQ(build["spec"]["prompt"], "add a README");
  EXPECT_FALSE(build["started_at"].is_null());
  EXPECT_FALSE(build["finished_at"].is_null());
  EXPECT_FALSE(build["worker_id"].is_null());
  EXPECT_EQ(build["composition"][0]["stage"], "agent");
  EXPECT_EQ(build["composition"][0]["plugin"], "code-agent/noop");
  std::vector<std::string> trail;
  for (const auto& e : build["events"]) trail.push_back(e["to"]);
  EXPECT_THAT(trail, ::testing::ElementsAre("pending", "running", "completed"));
}

TEST_P(ApiTest, SeedAliasAndTemplatesWork) {
  const auto r = server_->post(
      "/project/demo/build",
      {{"prompt", "p"}, {"template", "feature"}, {"variables", {{"feature", "dark mode"}}}});
  ASSERT_EQ(r.status, 202) << r.body;
  const json build = server_->waitForTerminal(json::parse(r.body)["task_id"]);
  EXPECT_EQ(build["status"], "completed") << build.dump(2);
  EXPECT_EQ(build["spec"]["template"], "feature");
}

TEST_P(ApiTest, TemplateProblemsAre400AtSubmitTimeAndNothingIsStored) {
  auto missing = server_->post("/projects/demo/builds", {{"prompt", "p"}, {"template", "feature"}});
  ASSERT_EQ(missing.status, 400) << missing.body;
  const json p = problemOf(missing);
  EXPECT_EQ(p["field"], "variables");
  EXPECT_THAT(p["detail"].get<std::string>(), HasSubstr("requires variable \"feature\""));

  auto unknown = server_->post("/projects/demo/builds", {{"prompt", "p"}, {"template", "nope"}});
  ASSERT_EQ(unknown.status, 400) << unknown.body;
  EXPECT_EQ(problemOf(unknown)["field"], "template");
  EXPECT_THAT(problemOf(unknown)["detail"].get<std::string>(),
              HasSubstr("unknown template \"nope\""));

  EXPECT_TRUE(json::parse(server_->get("/projects/demo/builds").body)["builds"].empty());
}

TEST_P(ApiTest, AFailingAgentFailsTheBuildAsWorkload) {
  const json build = server_->waitForTerminal(submit("failing", {{"prompt", "p"}}));
  EXPECT_EQ(build["status"], "failed");
  EXPECT_EQ(build["error_kind"], "workload");
  EXPECT_EQ(build["result"]["success"], false);
}

TEST_P(ApiTest, ListingIsNewestFirstWithFiltersAndCursors) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(submit("demo", {{"prompt", "p" + std::to_string(i)}}));
  for (const auto& id : ids) server_->waitForTerminal(id);

  auto page1 = json::parse(server_->get("/projects/demo/builds?limit=2").body);
  ASSERT_EQ(page1["builds"].size(), 2u);
  EXPECT_EQ(page1["builds"][0]["task_id"], ids[4]);
  EXPECT_EQ(page1["builds"][1]["task_id"], ids[3]);
  ASSERT_TRUE(page1["next_cursor"].is_string());
  auto page2 = json::parse(server_->get(page1["links"]["next"].get<std::string>()).body);
  EXPECT_EQ(page2["builds"][0]["task_id"], ids[2]);
  auto page3 = json::parse(server_->get(page2["links"]["next"].get<std::string>()).body);
  ASSERT_EQ(page3["builds"].size(), 1u);
  EXPECT_EQ(page3["builds"][0]["task_id"], ids[0]);
  EXPECT_TRUE(page3["next_cursor"].is_null());

  EXPECT_EQ(
      json::parse(server_->get("/projects/demo/builds?status=completed").body)["builds"].size(),
      5u);
  EXPECT_EQ(json::parse(server_->get("/projects/demo/builds?status=failed").body)["builds"].size(),
            0u);

  auto bad_status = server_->get("/projects/demo/builds?status=done");
  EXPECT_EQ(bad_status.status, 400);
  EXPECT_EQ(problemOf(bad_status)["field"], "status");
  EXPECT_EQ(server_->get("/projects/demo/builds?limit=0").status, 400);
  EXPECT_EQ(server_->get("/projects/demo/builds?limit=abc").status, 400);
  EXPECT_EQ(server_->get("/projects/demo/builds?cursor=xyz").status, 400);
  EXPECT_EQ(problemOf(server_->get("/projects/nope/builds"))["status"], 404);
}

TEST_P(ApiTest, BadRequestsGetProblemsThatSayWhatToFix) {
  auto missing = server_->post("/projects/demo/builds", json{{"template", "feature"}});
  EXPECT_EQ(missing.status, 400);
  auto p = problemOf(missing);
  EXPECT_EQ(p["field"], "prompt");
  EXPECT_THAT(p["detail"].get<std::string>(), HasSubstr("prompt is required"));

  auto unknown =
      server_->post("/projects/demo/builds", json{{"prompt", "p"}, {"auto_comit", true}});
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(problemOf(unknown)["field"], "auto_comit");

  auto vars =
      server_->post("/projects/demo/builds", json{{"prompt", "p"}, {"variables", {{"n", 1}}}});
  EXPECT_EQ(vars.status, 400);
  EXPECT_EQ(problemOf(vars)["field"], "variables.n");

  auto callback =
      server_->post("/projects/demo/builds", json{{"prompt", "p"}, {"callback_url", "/relative"}});
  EXPECT_EQ(callback.status, 400);
  EXPECT_EQ(problemOf(callback)["field"], "callback_url");

  auto timeout = server_->post("/projects/slow/builds", json{{"prompt", "p"}, {"timeout_s", 601}});
  EXPECT_EQ(timeout.status, 400);
  EXPECT_THAT(problemOf(timeout)["detail"].get<std::string>(), HasSubstr("between 1 and 600"));

  auto malformed = server_->postRaw("/projects/demo/builds", "{\"prompt\": ", "application/json");
  EXPECT_EQ(malformed.status, 400);
  EXPECT_THAT(problemOf(malformed)["type"].get<std::string>(), HasSubstr("malformed-json"));

  auto media =
      server_->postRaw("/projects/demo/builds", "prompt=x", "application/x-www-form-urlencoded");
  EXPECT_EQ(media.status, 415);
  problemOf(media);

  auto big = server_->post("/projects/demo/builds", json{{"prompt", std::string(70000, 'x')}});
  EXPECT_EQ(big.status, 413);
  problemOf(big);

  EXPECT_EQ(problemOf(server_->post("/projects/nope/builds", json{{"prompt", "p"}}))["status"],
            404);
  EXPECT_EQ(problemOf(server_->get("/builds/0190aaaa-0000-7000-8000-000000000000"))["status"], 404);
  auto method = kiln::testing::httpRequest("DELETE", "127.0.0.1", server_->port(), "/builds/x");
  EXPECT_EQ(method.status, 405);
  EXPECT_EQ(method.headers["Allow"], "GET");
}

TEST_P(ApiTest, CancelAndRetry) {
  const std::string running = submit("slow", {{"prompt", "long"}});
  server_->waitForStatus(running, "running");
  const std::string queued = submit("slow", {{"prompt", "queued behind"}});

  auto cancel_pending = server_->post("/builds/" + queued + "/cancel", json::object());
  ASSERT_EQ(cancel_pending.status, 200) << cancel_pending.body;
  EXPECT_EQ(json::parse(cancel_pending.body)["status"], "cancelled");

  const auto t0 = std::chrono::steady_clock::now();
  auto cancel_running = server_->post("/builds/" + running + "/cancel", json::object());
  ASSERT_EQ(cancel_running.status, 202) << cancel_running.body;
  EXPECT_EQ(json::parse(cancel_running.body)["cancel_requested"], true);
  const json done = server_->waitForTerminal(running, 10000);
  EXPECT_EQ(done["status"], "cancelled");
  EXPECT_EQ(done["error_kind"], "cancelled");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));

  auto again = server_->post("/builds/" + running + "/cancel", json::object());
  EXPECT_EQ(again.status, 409);
  EXPECT_THAT(problemOf(again)["detail"].get<std::string>(), HasSubstr("cancelled"));

  auto retry = server_->post("/builds/" + queued + "/retry", json::object());
  ASSERT_EQ(retry.status, 202) << retry.body;
  const std::string retried = json::parse(retry.body)["task_id"];
  const json r = json::parse(server_->get("/builds/" + retried).body);
  EXPECT_EQ(r["retry_of"], queued);
  EXPECT_EQ(r["spec"]["prompt"], "queued behind");

  const std::string completed = submit("demo", {{"prompt", "p"}});
  server_->waitForTerminal(completed);
  auto retry_completed = server_->post("/builds/" + completed + "/retry", json::object());
  EXPECT_EQ(retry_completed.status, 409);
  problemOf(retry_completed);
  // Leave nothing slow running behind.
  server_->post("/builds/" + retried + "/cancel", json::object());
}

TEST_P(ApiTest, APendingCapAnswers429WithRetryAfterAndDropsNothing) {
  const std::string running = submit("slow", {{"prompt", "0"}});
  server_->waitForStatus(running, "running");
  const std::string a = submit("slow", {{"prompt", "1"}});
  const std::string b = submit("slow", {{"prompt", "2"}});
  auto refused = server_->post("/projects/slow/builds", json{{"prompt", "3"}});
  ASSERT_EQ(refused.status, 429) << refused.body;
  EXPECT_EQ(refused.headers.at("Retry-After"), "5");
  EXPECT_THAT(problemOf(refused)["detail"].get<std::string>(), HasSubstr("max_pending_builds"));
  const json list = json::parse(server_->get("/projects/slow/builds").body);
  EXPECT_EQ(list["builds"].size(), 3u);
  for (const auto& id : {running, a, b}) server_->post("/builds/" + id + "/cancel", json::object());
}

TEST_P(ApiTest, ProjectsFromConfigAndApi) {
  kiln::testing::makeBareRepository(server_->dir() + "/repos/web.git");
  const json projects = json::parse(server_->get("/projects").body)["projects"];
  ASSERT_GE(projects.size(), 3u);
  EXPECT_EQ(projects[0]["id"], "demo");
  EXPECT_EQ(projects[0]["source"], "config");

  auto created = server_->post("/projects", {{"id", "web"},
                                             {"repo_url", server_->dir() + "/repos/web.git"},
                                             {"default_branch", "trunk"}});
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.headers.at("Location"), "/projects/web");
  EXPECT_EQ(json::parse(server_->get("/projects/web").body)["default_branch"], "trunk");
  EXPECT_EQ(json::parse(server_->get("/projects/web").body)["source"], "api");
  EXPECT_EQ(server_->post("/projects", {{"id", "web"}, {"repo_url", "/x"}}).status, 409);
  auto bad = server_->post("/projects", {{"id", "Web Site"}, {"repo_url", "/x"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(problemOf(bad)["field"], "id");
  EXPECT_EQ(problemOf(server_->get("/projects/nope"))["status"], 404);

  // An API project runs on the configuration's defaults.
  const json build = server_->waitForTerminal(submit("web", {{"prompt", "p"}}));
  EXPECT_EQ(build["status"], "completed");
  EXPECT_EQ(build["branch"], "trunk");
}

TEST_P(ApiTest, CreateAndBuildIsOneStep) {
  kiln::testing::makeBareRepository(server_->dir() + "/repos/fresh.git");
  auto r = server_->post(
      "/project/create-and-build",
      {{"project", {{"id", "fresh"}, {"repo_url", server_->dir() + "/repos/fresh.git"}}},
       {"build", {{"prompt", "start"}}}});
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string id = json::parse(r.body)["task_id"];
  EXPECT_EQ(server_->waitForTerminal(id)["status"], "completed");
  EXPECT_EQ(server_->get("/projects/fresh").status, 200);

  auto dup = server_->post(
      "/project/create-and-build",
      {{"project", {{"id", "fresh"}, {"repo_url", "/x"}}}, {"build", {{"prompt", "again"}}}});
  EXPECT_EQ(dup.status, 409);
  EXPECT_EQ(json::parse(server_->get("/projects/fresh/builds").body)["builds"].size(), 1u)
      << "no second build";

  // Without repo_url, the git host creates the repository.
  auto created = server_->post("/project/create-and-build", {{"project", {{"id", "made-here"}}},
                                                             {"build", {{"prompt", "hello"}}}});
  ASSERT_EQ(created.status, 202) << created.body;
  const json made = json::parse(server_->get("/projects/made-here").body);
  const std::string repo = made["repo_url"];
  EXPECT_EQ(repo, server_->dir() + "/repos/made-here.git");
  EXPECT_TRUE(std::filesystem::exists(repo + "/HEAD")) << "a bare repository";
  auto again = server_->post("/project/create-and-build", {{"project", {{"id", "made-here"}}},
                                                           {"build", {{"prompt", "again"}}}});
  EXPECT_EQ(again.status, 409);

  auto bad_build = server_->post(
      "/project/create-and-build",
      {{"project", {{"id", "other"}, {"repo_url", "/x"}}}, {"build", {{"promt", "x"}}}});
  EXPECT_EQ(bad_build.status, 400);
  EXPECT_EQ(server_->get("/projects/other").status, 404) << "nothing written";
}

TEST_P(ApiTest, IdempotencyKeyReplaysRejectsMismatchesAndNeverDuplicates) {
  const json spec = {{"prompt", "once"}};
  auto first = server_->post("/projects/demo/builds", spec, {{"Idempotency-Key", "\"key-1\""}});
  ASSERT_EQ(first.status, 202);
  auto replay = server_->post("/projects/demo/builds", spec, {{"Idempotency-Key", "key-1"}});
  ASSERT_EQ(replay.status, 202);
  EXPECT_EQ(replay.body, first.body);
  EXPECT_EQ(replay.headers["Idempotent-Replayed"], "true");
  auto mismatch = server_->post("/projects/demo/builds", json{{"prompt", "other"}},
                                {{"Idempotency-Key", "key-1"}});
  EXPECT_EQ(mismatch.status, 422);
  problemOf(mismatch);
  EXPECT_EQ(json::parse(server_->get("/projects/demo/builds").body)["builds"].size(), 1u);

  // 50 concurrent requests with one key: one build, every answer that build or 409.
  std::vector<std::thread> clients;
  std::atomic<int> accepted{0}, in_progress{0}, other{0};
  std::mutex mu;
  std::set<std::string> task_ids;
  for (int i = 0; i < 50; ++i) {
    clients.emplace_back([&] {
      auto r = server_->post("/projects/demo/builds", json{{"prompt", "burst"}},
                             {{"Idempotency-Key", "burst-key"}});
      if (r.status == 202) {
        ++accepted;
        std::lock_guard<std::mutex> lock(mu);
        task_ids.insert(json::parse(r.body)["task_id"].get<std::string>());
      } else if (r.status == 409) {
        ++in_progress;
      } else {
        ++other;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GE(accepted.load(), 1);
  EXPECT_EQ(accepted.load() + in_progress.load(), 50);
  EXPECT_EQ(task_ids.size(), 1u);
  int bursts = 0;
  const json listing = json::parse(server_->get("/projects/demo/builds?limit=100").body);
  for (const auto& b : listing["builds"]) {
    if (b["spec"]["prompt"] == "burst") ++bursts;
  }
  EXPECT_EQ(bursts, 1);
}

INSTANTIATE_TEST_SUITE_P(Stores, ApiTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace

namespace {

// The issue's concurrency test, literally: 4 worker threads in each of 2
// separate `kiln serve` processes share one PostgreSQL database and run
// 2,000 builds; every build completes exactly once.
TEST(TwoKilnProcessesTest, ShareOnePostgresAndRunEveryBuildExactlyOnce) {
  TestDatabase db;
  const std::string repos =
      (std::filesystem::temp_directory_path() / ("kiln-two-" + std::to_string(::getpid())))
          .string();
  kiln::testing::makeBareRepository(repos + "/p.git");
  std::string projects;
  for (int p = 0; p < 8; ++p) {
    projects += "  p" + std::to_string(p) + ":\n    repo_url: " + repos +
                "/p.git\n    max_running_builds: 8\n" + "    max_pending_builds: 1000\n";
  }
  const std::string config =
      "server:\n  listen: 127.0.0.1:0\n  workers: 4\n  lease_s: 5\n"
      "  shutdown_grace_s: 5\nstore:\n  postgres:\n    url: " +
      db.url() +
      "\ninstances:\n  agent:\n    plugin: code-agent/noop\n"
      "defaults:\n  agent: agent\nprojects:\n" +
      projects;
  KilnServer a(kKiln, config);
  KilnServer b(kKiln, config);

  constexpr int kBuilds = 2000;
  std::vector<std::string> ids(kBuilds);
  std::vector<std::thread> clients;
  std::atomic<int> refused{0};
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      const KilnServer& via = c % 2 == 0 ? a : b;
      for (int i = c; i < kBuilds; i += 8) {
        // Spread over projects and branches so that both processes' workers
        // can run many builds at once.
        const json spec = {{"prompt", "build " + std::to_string(i)},
                           {"branch", "b" + std::to_string(i % 16)}};
        const auto r = via.post("/projects/p" + std::to_string(i % 8) + "/builds", spec);
        if (r.status != 202) {
          ++refused;
          continue;
        }
        ids[static_cast<size_t>(i)] = json::parse(r.body)["task_id"];
      }
    });
  }
  for (auto& t : clients) t.join();
  ASSERT_EQ(refused.load(), 0);

  std::map<std::string, int> by_worker;
  for (const auto& id : ids) {
    const json build = a.waitForTerminal(id, 120000);
    ASSERT_EQ(build["status"], "completed") << build.dump();
    ASSERT_EQ(build["attempts"], 1) << id;
    int claims = 0, completions = 0;
    for (const auto& e : build["events"]) {
      if (e["to"] == "running") ++claims;
      if (e["to"] == "completed") ++completions;
    }
    ASSERT_EQ(claims, 1) << id;
    ASSERT_EQ(completions, 1) << id;
    ++by_worker[build["worker_id"].get<std::string>()];
  }
  // Both processes took part (worker ids are host:pid).
  EXPECT_EQ(by_worker.size(), 2u);
  for (const auto& [worker, n] : by_worker) EXPECT_GT(n, 0) << worker;
  std::filesystem::remove_all(repos);
  for (int p = 0; p < 8; ++p) {
    const json pending =
        json::parse(a.get("/projects/p" + std::to_string(p) + "/builds?status=pending").body);
    EXPECT_TRUE(pending["builds"].empty());
  }
}

}  // namespace
