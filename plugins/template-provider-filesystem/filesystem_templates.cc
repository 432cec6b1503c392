// template-provider/filesystem: prompt templates are mustache files
// "<name>.md" in configured directories; the first directory that has a
// name wins, so a project folder can override the bundled templates.
//
// A template may start with a YAML front matter that documents it:
//   ---
//   description: Implement a feature
//   variables:
//     feature: {required: true, description: What to build}
//     area: {default: core}
//   ---
// A missing required variable is KILN_ERR_INVALID_ARGUMENT naming it, so
// Kiln can refuse the build at submit time (400) instead of failing later.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <yaml-cpp/yaml.h>
#include <kainjow/mustache.hpp>
#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

namespace fs = std::filesystem;
using kiln::sdk::Error;
using nlohmann::json;

struct Variable {
  std::string name;
  bool required = false;
  std::optional<std::string> default_value;
  std::string description;
};

struct Template {
  std::string name;
  fs::path file;
  std::string description;
  std::vector<Variable> variables;
  std::string body;
};

// Splits "---\n<yaml>\n---\n<body>"; files without front matter are all body.
Template parseTemplate(const std::string& name, const fs::path& file, const std::string& text) {
  Template t{name, file, "", {}, text};
  if (text.rfind("---\n", 0) != 0) return t;
  const auto end = text.find("\n---\n", 3);
  if (end == std::string::npos) {
    throw Error("template \"" + name + "\" (" + file.string() +
                    "): front matter starts with --- but has no closing --- line",
                KILN_ERR_INVALID_ARGUMENT);
  }
  t.body = text.substr(end + 5);
  try {
    const YAML::Node meta = YAML::Load(text.substr(4, end - 3));
    if (meta["description"]) t.description = meta["description"].as<std::string>();
    if (const YAML::Node vars = meta["variables"]) {
      for (const auto& v : vars) {
        Variable var;
        var.name = v.first.as<std::string>();
        const YAML::Node spec = v.second;
        if (spec.IsMap()) {
          var.required = spec["required"] && spec["required"].as<bool>();
          if (spec["default"]) var.default_value = spec["default"].as<std::string>();
          if (spec["description"]) var.description = spec["description"].as<std::string>();
        } else if (spec.IsScalar()) {
          var.description = spec.as<std::string>();
        }
        t.variables.push_back(std::move(var));
      }
    }
  } catch (const YAML::Exception& e) {
    throw Error("template \"" + name + "\" (" + file.string() + "): front matter: " + e.what(),
                KILN_ERR_INVALID_ARGUMENT);
  }
  return t;
}

class FilesystemTemplates : public kiln::sdk::TemplateProvider {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "filesystem", "Filesystem templates", "0.2.0",
      "Mustache prompt templates (<name>.md, optional YAML front matter declaring variables) "
      "from one or more directories.",
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
    const Template t = load(req.value("template", ""));
    kainjow::mustache::mustache tmpl(t.body);
    if (!tmpl.is_valid()) {
      throw Error("template \"" + t.name + "\" (" + t.file.string() + "): " + tmpl.error_message(),
                  KILN_ERR_INVALID_ARGUMENT);
    }
    kainjow::mustache::data data;
    const json variables = req.value("variables", json::object());
    for (const auto& v : t.variables) {
      if (v.default_value) data.set(v.name, *v.default_value);
    }
    for (const char* section : {"builtins", "variables"}) {  // variables win over builtins
      if (!req.contains(section)) continue;
      for (const auto& [k, v] : req[section].items()) {
        data.set(k, v.is_string() ? v.get<std::string>() : v.dump());
      }
    }
    std::vector<std::string> missing;
    for (const auto& v : t.variables) {
      if (v.required && !variables.contains(v.name)) {
        missing.push_back("\"" + v.name + "\"" +
                          (v.description.empty() ? "" : " (" + v.description + ")"));
      }
    }
    if (!missing.empty()) {
      std::string list;
      for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
      throw Error("template \"" + t.name + "\" requires variable" +
                      (missing.size() > 1 ? "s " : " ") + list +
                      "; set it in the build's \"variables\"",
                  KILN_ERR_INVALID_ARGUMENT);
    }
    // Prompts are plain text, not HTML: no entity escaping.
    tmpl.set_custom_escape([](const std::string& s) { return s; });
    return json{{"prompt", tmpl.render(data)}}.dump();
  }

  std::string list(kiln::sdk::Call&, std::string_view) override {
    std::map<std::string, fs::path> seen;  // name -> file, first directory wins
    for (const auto& dir : directories_) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.path().extension() == ".md") seen.emplace(e.path().stem().string(), e.path());
      }
    }
    json templates = json::array();
    for (const auto& [name, file] : seen) {
      const Template t = load(name);
      json vars = json::array();
      for (const auto& v : t.variables) {
        json j = {{"name", v.name}, {"required", v.required}, {"description", v.description}};
        if (v.default_value) j["default"] = *v.default_value;
        vars.push_back(j);
      }
      templates.push_back({{"name", name}, {"description", t.description}, {"variables", vars}});
    }
    return json{{"templates", templates}}.dump();
  }

 private:
  Template load(const std::string& name) const {
    static const std::regex kName("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
    if (!std::regex_match(name, kName) || name.find("..") != std::string::npos) {
      throw Error("template name \"" + name +
                      "\" is invalid: use letters, digits, '.', '_' and '-' (at most 64)",
                  KILN_ERR_INVALID_ARGUMENT);
    }
    for (const auto& dir : directories_) {
      const fs::path candidate = dir / (name + ".md");
      std::error_code ec;
      if (!fs::is_regular_file(candidate, ec)) continue;
      std::ifstream in(candidate);
      std::stringstream text;
      text << in.rdbuf();
      return parseTemplate(name, candidate, text.str());
    }
    throw Error("unknown template \"" + name + "\"", KILN_ERR_NOT_FOUND);
  }

  std::vector<fs::path> directories_;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-template-provider-filesystem", "0.2.0", FilesystemTemplates)
