#include "kiln/http/api.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>
#include <nlohmann/json.hpp>

#include "kiln/codec/build_json.h"

namespace kiln::http {
namespace {

using nlohmann::json;

constexpr int kRetryAfterS = 5;

std::string lowerCopy(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Response withJson(int status, const json& body) {
  return Response{status, "application/json", body.dump(), {}};
}

Response invalid(const std::string& detail,
                 const std::vector<std::pair<std::string, std::string>>& fields) {
  Response r = problem(400, "invalid-request", "Invalid request", detail);
  json body = json::parse(r.body);
  json errors = json::array();
  for (const auto& [field, message] : fields)
    errors.push_back({{"field", field}, {"message", message}});
  body["errors"] = errors;
  if (!fields.empty()) body["field"] = fields.front().first;
  r.body = body.dump();
  return r;
}

// Parses a JSON request body; on failure `error` holds the answer.
std::optional<json> jsonBody(const Request& req, Response* error) {
  const auto ct = req.headers.find("content-type");
  const std::string type = ct == req.headers.end() ? "" : lowerCopy(ct->second);
  if (type.rfind("application/json", 0) != 0 && type.find("+json") == std::string::npos) {
    *error = problem(415, "unsupported-media-type", "Unsupported media type",
                     "send the body as JSON with Content-Type: application/json" +
                         (type.empty() ? std::string() : " (got " + ct->second + ")"));
    return std::nullopt;
  }
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded()) {
    *error = problem(400, "malformed-json", "Malformed JSON",
                     "the request body is not valid JSON; check quoting and commas");
    return std::nullopt;
  }
  return body;
}

json buildLinks(const domain::Build& b) {
  return json{{"self", "/builds/" + b.task_id},
              {"project_builds", "/projects/" + b.project_id + "/builds"},
              {"cancel", "/builds/" + b.task_id + "/cancel"},
              {"retry", "/builds/" + b.task_id + "/retry"}};
}

Response accepted(const domain::Build& b) {
  Response r = withJson(202, json{{"task_id", b.task_id},
                                  {"status", domain::statusName(b.status)},
                                  {"project_id", b.project_id},
                                  {"links", buildLinks(b)}});
  r.headers.emplace_back("Location", "/builds/" + b.task_id);
  return r;
}

json buildWithLinks(const domain::Build& b) {
  json j = codec::toJson(b);
  j["links"] = buildLinks(b);
  return j;
}

std::optional<domain::Project> projectFrom(const json& body, Response* error,
                                           bool repo_url_required = true) {
  if (!body.is_object()) {
    *error = invalid("the project must be a JSON object", {{"", "expected an object"}});
    return std::nullopt;
  }
  domain::Project p;
  std::vector<std::pair<std::string, std::string>> fields;
  static const std::vector<std::string> kKnown = {
      "id",           "repo_url", "default_branch", "max_running_builds", "max_pending_builds",
      "max_timeout_s"};
  for (const auto& [key, value] : body.items()) {
    if (std::find(kKnown.begin(), kKnown.end(), key) == kKnown.end()) {
      fields.emplace_back(key, "unknown field \"" + key +
                                   "\" (a project has: id, repo_url, default_branch, "
                                   "max_running_builds, max_pending_builds, max_timeout_s)");
    } else if (key == "id" || key == "repo_url" || key == "default_branch") {
      if (!value.is_string()) {
        fields.emplace_back(key, key + " must be a string");
        continue;
      }
      const std::string v = value.get<std::string>();
      if (key == "id") p.id = v;
      if (key == "repo_url") p.repo_url = v;
      if (key == "default_branch") p.default_branch = v;
    } else {
      if (!value.is_number_integer()) {
        fields.emplace_back(key, key + " must be an integer");
        continue;
      }
      const int v = value.get<int>();
      if (key == "max_running_builds") p.max_running_builds = v;
      if (key == "max_pending_builds") p.max_pending_builds = v;
      if (key == "max_timeout_s") p.max_timeout_s = v;
    }
  }
  if (!body.contains("id")) fields.emplace_back("id", "id is required");
  if (repo_url_required && !body.contains("repo_url")) {
    fields.emplace_back("repo_url", "repo_url is required");
  }
  if (!fields.empty()) {
    *error = invalid(fields.front().second, fields);
    return std::nullopt;
  }
  return p;
}

std::string fingerprintOf(const Request& req) {
  Poco::SHA2Engine sha(Poco::SHA2Engine::SHA_256);
  sha.update(req.method + "\n" + req.path + "\n");
  sha.update(req.body);
  return Poco::DigestEngine::digestToHex(sha.digest());
}

}  // namespace

Response problemFor(const Error& error) {
  switch (error.code) {
    case ErrorCode::kInvalidArgument: return invalid(error.message, error.fields);
    case ErrorCode::kNotFound: return problem(404, "not-found", "Not found", error.message);
    case ErrorCode::kConflict: return problem(409, "conflict", "Conflict", error.message);
    case ErrorCode::kResourceExhausted: {
      Response r = problem(429, "too-many-builds", "Too many pending builds", error.message);
      r.headers.emplace_back("Retry-After", std::to_string(kRetryAfterS));
      return r;
    }
    case ErrorCode::kUnavailable: {
      Response r = problem(503, "unavailable", "Service unavailable", error.message);
      r.headers.emplace_back("Retry-After", std::to_string(kRetryAfterS));
      return r;
    }
    default: return problem(500, "internal", "Internal error", error.message);
  }
}

Handler idempotent(ports::Store& store, Handler handler) {
  return [&store, handler = std::move(handler)](const Request& req) -> Response {
    const auto it = req.headers.find("idempotency-key");
    if (it == req.headers.end()) return handler(req);
    std::string key = it->second;
    // A Structured-Header string is quoted; accept the bare token too.
    if (key.size() >= 2 && key.front() == '"' && key.back() == '"')
      key = key.substr(1, key.size() - 2);
    if (key.empty() || key.size() > 255) {
      return problem(400, "invalid-idempotency-key", "Invalid Idempotency-Key",
                     "Idempotency-Key must be 1 to 255 characters, e.g. a UUID");
    }
    const std::string fingerprint = fingerprintOf(req);
    auto begun = store.beginIdempotent(key, fingerprint);
    if (!begun.ok()) return problemFor(begun.error());
    using State = ports::IdempotencyRecord::State;
    if (begun->state != State::kNew && begun->fingerprint != fingerprint) {
      return problem(422, "idempotency-key-reused", "Idempotency-Key reused",
                     "this Idempotency-Key was first used with a different request; use a new "
                     "key for a different request");
    }
    if (begun->state == State::kInProgress) {
      Response r = problem(409, "idempotency-key-in-progress", "Request in progress",
                           "a request with this Idempotency-Key is still being processed; retry "
                           "shortly to get its answer");
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    if (begun->state == State::kDone) {
      Response r{begun->status, begun->content_type, begun->body, {}};
      if (!begun->location.empty()) r.headers.emplace_back("Location", begun->location);
      r.headers.emplace_back("Idempotent-Replayed", "true");
      return r;
    }
    Response r = handler(req);
    if (r.status >= 500) {
      (void)store.abandonIdempotent(key);  // nothing took effect; let a retry run again
      return r;
    }
    ports::IdempotencyRecord answer;
    answer.state = State::kDone;
    answer.fingerprint = fingerprint;
    answer.status = r.status;
    answer.body = r.body;
    answer.content_type = r.content_type;
    for (const auto& [k, v] : r.headers) {
      if (k == "Location") answer.location = v;
    }
    (void)store.completeIdempotent(key, answer);
    return r;
  };
}

void addBuildApi(Router& router, services::BuildService& service) {
  ports::Store& store = service.store();

  auto submit = [&service](const Request& req) -> Response {
    Response error;
    auto body = jsonBody(req, &error);
    if (!body) return error;
    std::vector<domain::FieldError> problems;
    auto spec = codec::parseSpec(*body, &problems);
    if (!spec) {
      std::vector<std::pair<std::string, std::string>> fields;
      for (const auto& p : problems) fields.emplace_back(p.field, p.message);
      return invalid(problems.front().message, fields);
    }
    const std::string project =
        req.params.count("id") ? req.params.at("id") : req.params.at("name");
    auto build = service.submit(project, *spec);
    return build.ok() ? accepted(*build) : problemFor(build.error());
  };
  router.add("POST", "/projects/{id}/builds", idempotent(store, submit));
  router.add("POST", "/project/{name}/build", idempotent(store, submit));  // seed summary alias

  router.add("GET", "/projects/{id}/builds", [&store](const Request& req) -> Response {
    ports::BuildQuery q;
    q.project_id = req.params.at("id");
    if (auto project = store.getProject(q.project_id); !project.ok())
      return problemFor(project.error());
    if (auto it = req.query.find("status"); it != req.query.end()) {
      q.status = domain::parseStatus(it->second);
      if (!q.status) {
        return invalid("status must be one of pending, running, completed, failed, cancelled",
                       {{"status", "unknown status \"" + it->second + "\""}});
      }
    }
    if (auto it = req.query.find("limit"); it != req.query.end()) {
      try {
        size_t used = 0;
        q.limit = std::stoi(it->second, &used);
        if (used != it->second.size() || q.limit < 1 || q.limit > 100) throw std::out_of_range("");
      } catch (const std::exception&) {
        return invalid("limit must be an integer from 1 to 100",
                       {{"limit", "got \"" + it->second + "\""}});
      }
    }
    if (auto it = req.query.find("cursor"); it != req.query.end()) {
      if (!domain::isValidTaskId(it->second)) {
        return invalid("cursor must be the next_cursor of a previous page",
                       {{"cursor", "not a cursor: \"" + it->second + "\""}});
      }
      q.before = it->second;
    }
    auto page = store.listBuilds(q);
    if (!page.ok()) return problemFor(page.error());
    json builds = json::array();
    for (const auto& b : page->builds) builds.push_back(buildWithLinks(b));
    json out = {{"builds", builds}};
    out["next_cursor"] = page->next_cursor ? json(*page->next_cursor) : json(nullptr);
    if (page->next_cursor) {
      std::string next = "/projects/" + q.project_id + "/builds?cursor=" + *page->next_cursor +
                         "&limit=" + std::to_string(q.limit);
      if (q.status) next += "&status=" + std::string(domain::statusName(*q.status));
      out["links"] = {{"next", next}};
    }
    return withJson(200, out);
  });

  router.add("GET", "/builds/{task_id}", [&store](const Request& req) -> Response {
    auto build = store.getBuild(req.params.at("task_id"));
    if (!build.ok()) return problemFor(build.error());
    auto events = store.listEvents(build->task_id);
    if (!events.ok()) return problemFor(events.error());
    json out = buildWithLinks(*build);
    json audit = json::array();
    for (const auto& e : *events) audit.push_back(codec::toJson(e));
    out["events"] = audit;
    return withJson(200, out);
  });

  router.add("POST", "/builds/{task_id}/cancel", idempotent(store, [&service](const Request& req) {
               auto build = service.cancel(req.params.at("task_id"));
               if (!build.ok()) return problemFor(build.error());
               return withJson(build->status == domain::BuildStatus::kCancelled ? 200 : 202,
                               buildWithLinks(*build));
             }));

  router.add("POST", "/builds/{task_id}/retry", idempotent(store, [&service](const Request& req) {
               auto build = service.retry(req.params.at("task_id"));
               return build.ok() ? accepted(*build) : problemFor(build.error());
             }));

  router.add("POST", "/projects", idempotent(store, [&service](const Request& req) -> Response {
               Response error;
               auto body = jsonBody(req, &error);
               if (!body) return error;
               auto project = projectFrom(*body, &error);
               if (!project) return error;
               auto created = service.createProject(*project);
               if (!created.ok()) return problemFor(created.error());
               Response r = withJson(201, codec::toJson(*created));
               r.headers.emplace_back("Location", "/projects/" + created->id);
               return r;
             }));

  router.add("GET", "/projects", [&store](const Request&) -> Response {
    auto projects = store.listProjects();
    if (!projects.ok()) return problemFor(projects.error());
    json list = json::array();
    for (const auto& p : *projects) list.push_back(codec::toJson(p));
    return withJson(200, json{{"projects", list}});
  });

  router.add("GET", "/projects/{id}", [&store](const Request& req) -> Response {
    auto project = store.getProject(req.params.at("id"));
    return project.ok() ? withJson(200, codec::toJson(*project)) : problemFor(project.error());
  });

  router.add(
      "POST", "/project/create-and-build",
      idempotent(store, [&service](const Request& req) -> Response {
        Response error;
        auto body = jsonBody(req, &error);
        if (!body) return error;
        if (!body->is_object() || !body->contains("project") || !body->contains("build")) {
          return invalid(
              "the body must be {\"project\": {...}, \"build\": {BuildSpec}}",
              {{body->is_object() && body->contains("project") ? "build" : "project", "required"}});
        }
        for (const auto& [key, value] : body->items()) {
          if (key != "project" && key != "build") {
            return invalid("unknown field \"" + key + "\"",
                           {{key, "unknown field (expected project and build)"}});
          }
        }
        // Without repo_url the project's git host creates the repository.
        auto project = projectFrom((*body)["project"], &error, false);
        if (!project) return error;
        std::vector<domain::FieldError> problems;
        auto spec = codec::parseSpec((*body)["build"], &problems);
        if (!spec) {
          std::vector<std::pair<std::string, std::string>> fields;
          for (const auto& p : problems) fields.emplace_back("build." + p.field, p.message);
          return invalid(problems.front().message, fields);
        }
        auto build = service.createAndBuild(*project, *spec);
        return build.ok() ? accepted(*build) : problemFor(build.error());
      }));
}

void addBuildFilesApi(Router& router, ports::Store& store,
                      std::function<std::string(const std::string&)> log_path,
                      std::function<std::string(const std::string&)> artifact_dir) {
  router.add("GET", "/builds/{task_id}/log", [&store, log_path](const Request& req) -> Response {
    auto build = store.getBuild(req.params.at("task_id"));
    if (!build.ok()) return problemFor(build.error());
    std::ifstream in(log_path(build->task_id), std::ios::binary);
    std::stringstream text;
    if (in) text << in.rdbuf();  // a build that has not started has no log yet
    return Response{200, "text/plain; charset=utf-8", text.str(), {}};
  });
  router.add("GET", "/builds/{task_id}/artifacts/{name}",
             [&store, artifact_dir](const Request& req) -> Response {
               auto build = store.getBuild(req.params.at("task_id"));
               if (!build.ok()) return problemFor(build.error());
               const std::string& name = req.params.at("name");
               const bool declared =
                   build->result &&
                   std::any_of(build->result->artifacts.begin(), build->result->artifacts.end(),
                               [&](const domain::Artifact& a) { return a.name == name; });
               std::ifstream in(artifact_dir(build->task_id) + "/" + name, std::ios::binary);
               if (!declared || !in) {
                 return problem(404, "not-found", "Not found",
                                "build " + build->task_id + " has no artifact \"" + name + "\"");
               }
               std::stringstream data;
               data << in.rdbuf();
               Response r{200, "application/octet-stream", data.str(), {}};
               r.headers.emplace_back("Content-Disposition",
                                      "attachment; filename=\"" + name + "\"");
               return r;
             });
}

}  // namespace kiln::http
