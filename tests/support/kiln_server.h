// Test support: a `kiln serve` child process on a free port, with a config
// written to a scratch folder, stopped with SIGTERM when destroyed.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "http_client.h"
#include "subprocess.h"

namespace kiln::testing {

// A fresh PostgreSQL database on the throwaway server of the test command
// (admin URL in KILN_TEST_PG_URL), dropped when destroyed.
class TestDatabase {
 public:
  TestDatabase();  // throws if KILN_TEST_PG_URL is unset or the server is down
  ~TestDatabase();
  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }
  const std::string& adminUrl() const { return admin_url_; }

 private:
  std::string admin_url_;
  std::string name_;
  std::string url_;
};

// `url` (a postgresql:// URI or a key=value string) with its database
// replaced by `database`.
std::string withDatabase(const std::string& url, const std::string& database);

// `git init --bare` with main as its default branch (parents created).
void makeBareRepository(const std::string& path);

class KilnServer {
 public:
  // `config_yaml` must listen on 127.0.0.1:0. Throws if kiln does not start.
  KilnServer(const std::string& kiln_binary, const std::string& config_yaml);
  ~KilnServer();

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  Subprocess& process() { return *process_; }

  HttpResult get(const std::string& path) const;
  HttpResult post(const std::string& path, const nlohmann::json& body,
                  const std::map<std::string, std::string>& headers = {}) const;
  HttpResult postRaw(const std::string& path, const std::string& body,
                     const std::string& content_type,
                     const std::map<std::string, std::string>& headers = {}) const;
  // Polls GET /builds/{id} until its status is terminal or the timeout passes.
  nlohmann::json waitForTerminal(const std::string& task_id, int timeout_ms = 30000) const;
  nlohmann::json waitForStatus(const std::string& task_id, const std::string& status,
                               int timeout_ms = 30000) const;

 private:
  std::string dir_;
  std::unique_ptr<Subprocess> process_;
  int port_ = 0;
};

}  // namespace kiln::testing
