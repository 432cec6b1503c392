#include "kiln/codec/build_json.h"

#include <algorithm>

namespace kiln::codec {
namespace {

const char* typeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unsupported value";
  }
}

const std::vector<std::string> kSpecFields = {"prompt",      "template",       "variables",
                                              "auto_commit", "auto_push",      "callback_url",
                                              "branch",      "commit_message", "timeout_s"};

}  // namespace

std::optional<domain::BuildSpec> parseSpec(const json& body,
                                           std::vector<domain::FieldError>* errors,
                                           const std::vector<std::string>& allowed_extra) {
  const size_t before = errors->size();
  auto add = [&](std::string field, std::string message) {
    errors->push_back({std::move(field), std::move(message)});
  };
  if (!body.is_object()) {
    add("", std::string("the body must be a JSON object (a BuildSpec), got ") + typeName(body));
    return std::nullopt;
  }
  domain::BuildSpec spec;
  for (const auto& [key, value] : body.items()) {
    if (std::find(allowed_extra.begin(), allowed_extra.end(), key) != allowed_extra.end()) continue;
    auto optionalString = [&](std::optional<std::string>* out) {
      if (value.is_null()) return;
      if (!value.is_string()) return add(key, key + " must be a string, got " + typeName(value));
      *out = value.get<std::string>();
    };
    auto boolean = [&](bool* out) {
      if (!value.is_boolean())
        return add(key, key + " must be true or false, got " + typeName(value));
      *out = value.get<bool>();
    };
    if (key == "prompt") {
      if (!value.is_string())
        add(key, std::string("prompt must be a string, got ") + typeName(value));
      else
        spec.prompt = value.get<std::string>();
    } else if (key == "template") {
      optionalString(&spec.template_name);
    } else if (key == "variables") {
      if (value.is_null()) continue;
      if (!value.is_object()) {
        add(key, std::string("variables must be an object of strings, got ") + typeName(value));
        continue;
      }
      for (const auto& [name, v] : value.items()) {
        if (!v.is_string()) {
          add("variables." + name, "variables." + name + " must be a string, got " + typeName(v) +
                                       " (quote numbers and booleans)");
        } else {
          spec.variables[name] = v.get<std::string>();
        }
      }
    } else if (key == "auto_commit") {
      boolean(&spec.auto_commit);
    } else if (key == "auto_push") {
      boolean(&spec.auto_push);
    } else if (key == "callback_url") {
      optionalString(&spec.callback_url);
    } else if (key == "branch") {
      optionalString(&spec.branch);
    } else if (key == "commit_message") {
      optionalString(&spec.commit_message);
    } else if (key == "timeout_s") {
      if (value.is_null()) continue;
      if (!value.is_number_integer()) {
        add(key,
            std::string("timeout_s must be an integer number of seconds, got ") + typeName(value));
      } else {
        spec.timeout_s = value.get<int64_t>();
      }
    } else {
      std::string allowed;
      for (const auto& f : kSpecFields) allowed += (allowed.empty() ? "" : ", ") + f;
      add(key, "unknown field \"" + key + "\" (a BuildSpec has: " + allowed + ")");
    }
  }
  if (!body.contains("prompt")) add("prompt", "prompt is required");
  if (errors->size() != before) return std::nullopt;
  return spec;
}

json toJson(const domain::BuildSpec& s) {
  json j = {{"prompt", s.prompt},
            {"variables", s.variables},
            {"auto_commit", s.auto_commit},
            {"auto_push", s.auto_push}};
  if (s.template_name) j["template"] = *s.template_name;
  if (s.callback_url) j["callback_url"] = *s.callback_url;
  if (s.branch) j["branch"] = *s.branch;
  if (s.commit_message) j["commit_message"] = *s.commit_message;
  if (s.timeout_s) j["timeout_s"] = *s.timeout_s;
  return j;
}

json toJson(const domain::BuildResult& r) {
  json files = json::array();
  for (const auto& f : r.files_changed) files.push_back({{"path", f.path}, {"change", f.change}});
  json artifacts = json::array();
  for (const auto& a : r.artifacts) {
    artifacts.push_back({{"name", a.name}, {"path", a.path}, {"size_bytes", a.size_bytes}});
  }
  return json{{"success", r.success},   {"output", r.output},
              {"error", r.error},       {"commit_sha", r.commit_sha},
              {"files_changed", files}, {"duration_ms", r.duration_ms},
              {"artifacts", artifacts}};
}

json toJson(const std::vector<domain::CompositionEntry>& composition) {
  json out = json::array();
  for (const auto& c : composition) {
    out.push_back({{"stage", c.stage},
                   {"instance", c.instance},
                   {"plugin", c.plugin},
                   {"version", c.version}});
  }
  return out;
}

json toJson(const domain::BuildEvent& e) {
  json j = {{"seq", e.seq},
            {"at", domain::formatTime(e.at)},
            {"to", domain::statusName(e.to)},
            {"attempt", e.attempt},
            {"message", e.message}};
  j["from"] = e.from ? json(domain::statusName(*e.from)) : json(nullptr);
  return j;
}

json toJson(const domain::Project& p) {
  return json{{"id", p.id},
              {"repo_url", p.repo_url},
              {"default_branch", p.default_branch},
              {"source", p.source},
              {"max_running_builds", p.max_running_builds},
              {"max_pending_builds", p.max_pending_builds},
              {"max_timeout_s", p.max_timeout_s},
              {"created_at", domain::formatTime(p.created_at)}};
}

json toJson(const domain::Build& b) {
  auto time = [](const std::optional<domain::TimeMs>& t) {
    return t ? json(domain::formatTime(*t)) : json(nullptr);
  };
  json j = {{"task_id", b.task_id},
            {"project_id", b.project_id},
            {"status", domain::statusName(b.status)},
            {"branch", b.branch},
            {"spec", toJson(b.spec)},
            {"attempts", b.attempts},
            {"max_attempts", b.max_attempts},
            {"created_at", domain::formatTime(b.created_at)},
            {"started_at", time(b.started_at)},
            {"finished_at", time(b.finished_at)},
            {"cancel_requested", b.cancel_requested},
            {"composition", toJson(b.composition)}};
  j["result"] = b.result ? toJson(*b.result) : json(nullptr);
  j["error_kind"] = b.error_kind == domain::ErrorKind::kNone
                        ? json(nullptr)
                        : json(domain::errorKindName(b.error_kind));
  j["error"] = b.error.empty() ? json(nullptr) : json(b.error);
  j["worker_id"] = b.worker_id.empty() ? json(nullptr) : json(b.worker_id);
  j["retry_of"] = b.retry_of ? json(*b.retry_of) : json(nullptr);
  return j;
}

domain::BuildSpec specFromStored(const json& j) {
  domain::BuildSpec s;
  s.prompt = j.value("prompt", "");
  if (j.contains("template") && j["template"].is_string()) s.template_name = j["template"];
  if (j.contains("variables") && j["variables"].is_object()) {
    for (const auto& [k, v] : j["variables"].items()) {
      if (v.is_string()) s.variables[k] = v.get<std::string>();
    }
  }
  s.auto_commit = j.value("auto_commit", false);
  s.auto_push = j.value("auto_push", false);
  if (j.contains("callback_url") && j["callback_url"].is_string())
    s.callback_url = j["callback_url"];
  if (j.contains("branch") && j["branch"].is_string()) s.branch = j["branch"];
  if (j.contains("commit_message") && j["commit_message"].is_string()) {
    s.commit_message = j["commit_message"];
  }
  if (j.contains("timeout_s") && j["timeout_s"].is_number_integer()) s.timeout_s = j["timeout_s"];
  return s;
}

domain::BuildResult resultFromStored(const json& j) {
  domain::BuildResult r;
  r.success = j.value("success", false);
  r.output = j.value("output", "");
  r.error = j.value("error", "");
  r.commit_sha = j.value("commit_sha", "");
  r.duration_ms = j.value("duration_ms", int64_t{0});
  for (const auto& f : j.value("files_changed", json::array())) {
    r.files_changed.push_back({f.value("path", ""), f.value("change", "")});
  }
  for (const auto& a : j.value("artifacts", json::array())) {
    r.artifacts.push_back(
        {a.value("name", ""), a.value("path", ""), a.value("size_bytes", int64_t{0})});
  }
  return r;
}

std::vector<domain::CompositionEntry> compositionFromStored(const json& j) {
  std::vector<domain::CompositionEntry> out;
  if (!j.is_array()) return out;
  for (const auto& c : j) {
    out.push_back({c.value("stage", ""), c.value("instance", ""), c.value("plugin", ""),
                   c.value("version", "")});
  }
  return out;
}

}  // namespace kiln::codec
