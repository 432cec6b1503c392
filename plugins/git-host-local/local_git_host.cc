// git-host/local: repositories on this machine. create_repository makes a
// bare repository under the configured root, so that create-and-build works
// on a fresh machine with no hosting service; clones and pushes need no
// credentials.
#include <filesystem>
#include <mutex>
#include <regex>

#include <git2.h>
#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

namespace fs = std::filesystem;
using kiln::sdk::Error;
using nlohmann::json;

class LocalGitHost : public kiln::sdk::GitHost {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "local", "Local repositories", "0.1.0",
      "Bare git repositories in a folder on this machine; creates them on request.",
      R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
          "root": {"type": "string", "minLength": 1,
                   "description": "Folder holding <name>.git repositories; created if missing."},
          "default_branch": {"type": "string", "minLength": 1, "default": "main"}
        },
        "required": ["root"],
        "additionalProperties": false
      })"};

  LocalGitHost(kiln::sdk::Call&, std::string_view config) {
    static std::once_flag once;
    std::call_once(once, [] { git_libgit2_init(); });
    const json c = json::parse(config);
    root_ = fs::absolute(c.at("root").get<std::string>()).lexically_normal();
    default_branch_ = c.value("default_branch", "main");
    std::error_code ec;
    fs::create_directories(root_, ec);
    if (ec || !fs::is_directory(root_)) {
      throw Error("cannot create the repository root " + root_.string() + ": " + ec.message(),
                  KILN_ERR_INVALID_ARGUMENT);
    }
  }

  std::string credentials(kiln::sdk::Call&, std::string_view) override {
    return json{{"type", "none"}}.dump();
  }

  std::string createRepository(kiln::sdk::Call& call, std::string_view request) override {
    const json req = json::parse(request);
    const std::string name = req.value("name", "");
    static const std::regex kName("[A-Za-z0-9][A-Za-z0-9._-]{0,99}");
    if (!std::regex_match(name, kName) || name.find("..") != std::string::npos) {
      throw Error("repository name \"" + name + "\" is invalid: use letters, digits, '.', '_', '-'",
                  KILN_ERR_INVALID_ARGUMENT);
    }
    const fs::path path = root_ / (name + ".git");
    if (fs::exists(path)) {
      throw Error("repository " + path.string() + " already exists", KILN_ERR_INVALID_ARGUMENT);
    }
    const std::string branch = req.value("default_branch", default_branch_);
    const std::string head = "refs/heads/" + branch;
    git_repository_init_options opts = GIT_REPOSITORY_INIT_OPTIONS_INIT;
    opts.flags =
        GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_MKPATH | GIT_REPOSITORY_INIT_NO_REINIT;
    opts.initial_head = head.c_str();
    const std::string description = req.value("description", "");
    if (!description.empty()) opts.description = description.c_str();
    git_repository* repo = nullptr;
    if (git_repository_init_ext(&repo, path.c_str(), &opts) != 0) {
      const git_error* e = git_error_last();
      throw Error("cannot create " + path.string() + ": " + (e ? e->message : "unknown error"),
                  KILN_ERR_FAILED);
    }
    git_repository_free(repo);
    call.info("created bare repository " + path.string() + " (branch " + branch + ")");
    return json{{"repo_url", path.string()}, {"web_url", "file://" + path.string()}}.dump();
  }

 private:
  fs::path root_;
  std::string default_branch_;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-git-host-local", "0.1.0", LocalGitHost)
