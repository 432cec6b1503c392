#include "git_http_server.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <stdexcept>

#include "subprocess.h"

#ifndef KILN_GIT_HTTP_SERVER_SCRIPT
#error "KILN_GIT_HTTP_SERVER_SCRIPT must name tests/support/git-http-server.sh"
#endif

namespace kiln::testing {
namespace {

// A port the kernel just handed out for 127.0.0.1. Another process may take
// it before lighttpd binds it, so the caller retries on failure.
int freePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    throw std::runtime_error("could not find a free port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::string randomToken() {
  std::random_device device;
  static const char* const kHex = "0123456789abcdef";
  std::string out = "kt_";
  for (int i = 0; i < 32; ++i) out += kHex[device() % 16];
  return out;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

GitHttpServer::GitHttpServer() : token_(randomToken()) {
  char tmpl[] = "/tmp/kiln-git-http-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  std::string last_error;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const int port = freePort();
    const RunResult r = run(
        {"/bin/bash", KILN_GIT_HTTP_SERVER_SCRIPT, "start", dir_, std::to_string(port), token_});
    if (r.code == 0) {
      port_ = port;
      base_url_ = trimmed(r.out);
      return;
    }
    last_error = r.err;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  throw std::runtime_error("the git HTTP server did not start: " + last_error);
}

GitHttpServer::~GitHttpServer() {
  run({"/bin/bash", KILN_GIT_HTTP_SERVER_SCRIPT, "stop", dir_});
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string GitHttpServer::repositoryPath(const std::string& name) const {
  return dir_ + "/repos/" + name + ".git";
}

std::string GitHttpServer::createRepository(const std::string& name) const {
  const std::string path = repositoryPath(name);
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"/usr/bin/git", "init", "--quiet", "--bare", path},
           {"/usr/bin/git", "--git-dir=" + path, "config", "http.receivepack", "true"}}) {
    const RunResult r = run(argv);
    if (r.code != 0) throw std::runtime_error("creating " + path + " failed: " + r.err);
  }
  return base_url_ + "/" + name + ".git";
}

}  // namespace kiln::testing
