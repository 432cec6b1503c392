// template-provider/filesystem: prompt templates are mustache files
// "<name>.md" in configured directories; the first directory that has a
// name wins, so a project folder can override the bundled templates.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <kainjow/mustache.hpp>
#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

namespace fs = std::filesystem;
using kiln::sdk::Error;
using nlohmann::json;

class FilesystemTemplates : public kiln::sdk::TemplateProvider {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "filesystem", "Filesystem templates", "0.1.0",
      "Mustache prompt templates (<name>.md) from one or more directories.",
      R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
          "directories": {"type": "array", "minItems": 1,
                          "items": {"type": "string", "minLength": 1},
                          "description": "Searched in order; the first match wins."}
        },
        "required": ["directories"],
        "additionalProperties": false
      })"};

  FilesystemTemplates(kiln::sdk::Call&, std::string_view config) {
    const json parsed =
        json::parse(config);  // named: a range-for over a temporary's member dangles
    for (const auto& d : parsed.at("directories")) {
      const fs::path dir = d.get<std::string>();
      std::error_code ec;
      if (!fs::is_directory(dir, ec)) {
        throw Error("template directory \"" + dir.string() + "\" does not exist",
                    KILN_ERR_INVALID_ARGUMENT);
      }
      directories_.push_back(dir);
    }
  }

  std::string render(kiln::sdk::Call&, std::string_view request) override {
    const json req = json::parse(request);
    const std::string name = req.value("template", "");
    const fs::path file = find(name);
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();

    kainjow::mustache::mustache tmpl(text.str());
    if (!tmpl.is_valid()) {
      throw Error("template \"" + name + "\" (" + file.string() + "): " + tmpl.error_message(),
                  KILN_ERR_INVALID_ARGUMENT);
    }
    kainjow::mustache::data data;
    for (const char* section : {"builtins", "variables"}) {  // variables win over builtins
      if (!req.contains(section)) continue;
      for (const auto& [k, v] : req[section].items()) {
        data.set(k, v.is_string() ? v.get<std::string>() : v.dump());
      }
    }
    // Prompts are plain text, not HTML: no entity escaping.
    tmpl.set_custom_escape([](const std::string& s) { return s; });
    return json{{"prompt", tmpl.render(data)}}.dump();
  }

  std::string list(kiln::sdk::Call&, std::string_view) override {
    std::map<std::string, std::string> seen;  // name -> file, first directory wins
    for (const auto& dir : directories_) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.path().extension() == ".md") seen.emplace(e.path().stem().string(), e.path());
      }
    }
    json templates = json::array();
    for (const auto& [name, file] : seen) templates.push_back({{"name", name}, {"file", file}});
    return json{{"templates", templates}}.dump();
  }

 private:
  fs::path find(const std::string& name) const {
    static const std::regex kName("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
    if (!std::regex_match(name, kName) || name.find("..") != std::string::npos) {
      throw Error("template name \"" + name +
                      "\" is invalid: use letters, digits, '.', '_' and '-' (at most 64)",
                  KILN_ERR_INVALID_ARGUMENT);
    }
    for (const auto& dir : directories_) {
      const fs::path candidate = dir / (name + ".md");
      std::error_code ec;
      if (fs::is_regular_file(candidate, ec)) return candidate;
    }
    throw Error("unknown template \"" + name + "\"", KILN_ERR_NOT_FOUND);
  }

  std::vector<fs::path> directories_;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-template-provider-filesystem", "0.1.0", FilesystemTemplates)
