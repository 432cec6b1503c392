// git-host/generic: any git remote. Supplies the credentials git needs:
// an HTTPS token (as username/password) or an SSH key, or none for
// file:// and local paths. It has no hosting API, so it creates no
// repositories and opens no change requests.
#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

using nlohmann::json;

bool allows(const json& req, const char* type) {
  if (!req.contains("allowed")) return true;
  for (const auto& t : req["allowed"]) {
    if (t == type) return true;
  }
  return false;
}

class GenericGitHost : public kiln::sdk::GitHost {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "generic", "Generic git remote", "0.1.0",
      "Any git URL: https with a token, ssh with a key, file:// and local paths.",
      R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
          "username": {"type": "string", "default": "x-access-token",
                       "description": "HTTPS user name sent with the token."},
          "token": {"type": "string", "minLength": 1,
                    "description": "HTTPS token; use token_file or ${ENV} to keep it out of the file."},
          "ssh_user": {"type": "string", "default": "git"},
          "ssh_private_key_path": {"type": "string", "minLength": 1},
          "ssh_public_key_path": {"type": "string", "minLength": 1},
          "ssh_passphrase": {"type": "string"}
        },
        "additionalProperties": false
      })"};

  GenericGitHost(kiln::sdk::Call&, std::string_view config) : config_(json::parse(config)) {}

  std::string credentials(kiln::sdk::Call&, std::string_view request) override {
    const json req = json::parse(request);
    const std::string url = req.value("url", "");
    const bool is_https = url.rfind("https://", 0) == 0 || url.rfind("http://", 0) == 0;
    if (is_https && config_.contains("token") && allows(req, "userpass")) {
      return json{{"type", "userpass"},
                  {"username", config_.value("username", "x-access-token")},
                  {"password", config_["token"]}}
          .dump();
    }
    if (!is_https && config_.contains("ssh_private_key_path") && allows(req, "ssh_key")) {
      json out = {{"type", "ssh_key"},
                  {"username", config_.value("ssh_user", "git")},
                  {"private_key_path", config_["ssh_private_key_path"]}};
      if (config_.contains("ssh_public_key_path")) {
        out["public_key_path"] = config_["ssh_public_key_path"];
      }
      if (config_.contains("ssh_passphrase")) out["passphrase"] = config_["ssh_passphrase"];
      return out.dump();
    }
    return json{{"type", "none"}}.dump();
  }

 private:
  json config_;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-git-host-generic", "0.1.0", GenericGitHost)
