#include "kiln_server.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <stdexcept>
#include <thread>

#include <pqxx/pqxx>

namespace kiln::testing {

namespace {
std::string randomSuffix() {
  static std::mt19937_64 rng(std::random_device{}());
  return std::to_string(getpid()) + "_" + std::to_string(rng() % 1000000000);
}
}  // namespace

std::string withDatabase(const std::string& url, const std::string& database) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return url + " dbname=" + database;
  const size_t authority_end = url.find_first_of("/?", scheme + 3);
  if (authority_end == std::string::npos) return url + "/" + database;
  const size_t query = url.find('?', authority_end);
  return url.substr(0, authority_end) + "/" + database +
         (query == std::string::npos ? "" : url.substr(query));
}

void makeBareRepository(const std::string& path) {
  std::filesystem::create_directories(path);
  const auto r = run({"/usr/bin/git", "init", "--bare", "--quiet", "--initial-branch=main", path});
  if (r.code != 0) throw std::runtime_error("git init --bare " + path + " failed: " + r.err);
}

TestDatabase::TestDatabase() {
  const char* admin = std::getenv("KILN_TEST_PG_URL");
  if (admin == nullptr || *admin == '\0') {
    throw std::runtime_error(
        "KILN_TEST_PG_URL is not set: run the tests with scripts/test.sh, which starts a "
        "throwaway PostgreSQL server and sets it");
  }
  admin_url_ = admin;
  name_ = "kiln_t_" + randomSuffix();
  pqxx::connection c(admin_url_);
  pqxx::nontransaction tx(c);
  tx.exec("CREATE DATABASE " + name_);
  url_ = withDatabase(admin_url_, name_);
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection c(admin_url_);
    pqxx::nontransaction tx(c);
    tx.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (const std::exception&) {
    // The server is gone with the test run; nothing to clean.
  }
}

KilnServer::KilnServer(const std::string& kiln_binary, const std::string& config_yaml) {
  dir_ = (std::filesystem::temp_directory_path() / ("kiln-e2e-" + randomSuffix())).string();
  std::filesystem::create_directories(dir_);
  const std::string config = dir_ + "/kiln.yaml";
  std::ofstream(config) << config_yaml;
  process_ = std::make_unique<Subprocess>(
      std::vector<std::string>{kiln_binary, "serve", "--config", config});
  const auto line = process_->readLine(std::chrono::seconds(30));
  std::smatch m;
  if (!line ||
      !std::regex_search(*line, m, std::regex("listening on http://127\\.0\\.0\\.1:([0-9]+)"))) {
    process_->wait(std::chrono::seconds(5));
    throw std::runtime_error("kiln serve did not start: " + line.value_or("") + "\n" +
                             process_->err());
  }
  port_ = std::stoi(m[1]);
}

KilnServer::~KilnServer() {
  process_->signal(SIGTERM);
  process_->wait(std::chrono::seconds(30));
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

HttpResult KilnServer::get(const std::string& path) const {
  return httpRequest("GET", "127.0.0.1", port_, path);
}

HttpResult KilnServer::post(const std::string& path, const nlohmann::json& body,
                            const std::map<std::string, std::string>& headers) const {
  return httpRequest("POST", "127.0.0.1", port_, path, body.dump(), "application/json", headers);
}

HttpResult KilnServer::postRaw(const std::string& path, const std::string& body,
                               const std::string& content_type,
                               const std::map<std::string, std::string>& headers) const {
  return httpRequest("POST", "127.0.0.1", port_, path, body, content_type, headers);
}

nlohmann::json KilnServer::waitForStatus(const std::string& task_id, const std::string& status,
                                         int timeout_ms) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  nlohmann::json last;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto r = get("/builds/" + task_id);
    if (r.status == 200) {
      last = nlohmann::json::parse(r.body);
      if (last["status"] == status) return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return last;
}

nlohmann::json KilnServer::waitForTerminal(const std::string& task_id, int timeout_ms) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  nlohmann::json last;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto r = get("/builds/" + task_id);
    if (r.status == 200) {
      last = nlohmann::json::parse(r.body);
      const std::string s = last["status"];
      if (s == "completed" || s == "failed" || s == "cancelled") return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return last;
}

}  // namespace kiln::testing
