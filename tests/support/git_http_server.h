// Test support: a real smart-HTTP git server (git http-backend behind
// lighttpd, tests/support/git-http-server.sh) on a free 127.0.0.1 port with a
// random token, in a scratch folder that is removed when it stops.
#pragma once

#include <string>

namespace kiln::testing {

class GitHttpServer {
 public:
  // The only account: user kUser, password token(). Throws if the server
  // does not start (the script's message is in the exception).
  static constexpr const char* kUser = "x-access-token";

  GitHttpServer();
  ~GitHttpServer();  // stops the server and removes its folder
  GitHttpServer(const GitHttpServer&) = delete;
  GitHttpServer& operator=(const GitHttpServer&) = delete;

  int port() const { return port_; }
  const std::string& token() const { return token_; }
  // http://127.0.0.1:PORT/git
  const std::string& baseUrl() const { return base_url_; }

  // Creates a bare repository `name`.git (receive-pack enabled) and returns
  // its URL, baseUrl() + "/" + name + ".git". Throws on failure.
  std::string createRepository(const std::string& name) const;
  // The bare repository's folder on disk, for inspecting it with git.
  std::string repositoryPath(const std::string& name) const;

 private:
  std::string dir_;
  std::string token_;
  std::string base_url_;
  int port_ = 0;
};

}  // namespace kiln::testing
