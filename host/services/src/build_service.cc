#include "kiln/services/build_service.h"

namespace kiln::services {

using domain::Build;
using domain::BuildSpec;
using domain::Project;

BuildService::BuildService(ports::Store& store, BuildServiceOptions options)
    : store_(store), options_(options) {}

Result<void> validateProject(const Project& p) {
  Error error{ErrorCode::kInvalidArgument, "", false, {}};
  if (!domain::isValidProjectId(p.id)) {
    error.fields.emplace_back(
        "id", "project id must match ^[a-z0-9][a-z0-9._-]{0,62}$, got \"" + p.id + "\"");
  }
  if (p.repo_url.find_first_not_of(" \t") == std::string::npos) {
    error.fields.emplace_back("repo_url", "repo_url is required");
  }
  if (p.default_branch.empty()) {
    error.fields.emplace_back("default_branch", "default_branch must not be empty");
  }
  if (p.max_running_builds < 1) {
    error.fields.emplace_back("max_running_builds", "max_running_builds must be >= 1");
  }
  if (p.max_pending_builds < 1) {
    error.fields.emplace_back("max_pending_builds", "max_pending_builds must be >= 1");
  }
  if (p.max_timeout_s < 1) error.fields.emplace_back("max_timeout_s", "max_timeout_s must be >= 1");
  if (error.fields.empty()) return {};
  error.message = error.fields.front().second;
  return error;
}

Result<Build> BuildService::prepare(const Project& project, const BuildSpec& spec) {
  const auto problems = domain::validateSpec(
      spec, domain::SpecLimits{options_.max_prompt_bytes, project.max_timeout_s});
  if (!problems.empty()) {
    Error error{ErrorCode::kInvalidArgument, problems.front().message, false, {}};
    for (const auto& p : problems) error.fields.emplace_back(p.field, p.message);
    return error;
  }
  Build b;
  b.created_at = domain::nowMs();
  b.task_id = domain::newTaskId(b.created_at);
  b.project_id = project.id;
  b.branch = spec.branch.value_or(project.default_branch);
  b.spec = spec;
  b.max_attempts = options_.max_attempts;
  if (spec.template_name && options_.check_template) {
    if (auto checked = options_.check_template(project, b); !checked.ok()) {
      Error e = checked.error();
      if (e.code == ErrorCode::kNotFound) e.code = ErrorCode::kInvalidArgument;
      if (e.fields.empty()) e.fields.emplace_back("template", e.message);
      return e;
    }
  }
  return b;
}

Result<Build> BuildService::submit(const std::string& project_id, const BuildSpec& spec) {
  auto project = store_.getProject(project_id);
  if (!project.ok()) return project.error();
  auto build = prepare(*project, spec);
  if (!build.ok()) return build.error();
  return store_.enqueueBuild(*build);
}

Result<Build> BuildService::createAndBuild(const Project& project_in, const BuildSpec& spec) {
  Project project = project_in;
  project.source = "api";
  project.created_at = domain::nowMs();
  const bool create_repository = project.repo_url.empty();
  if (create_repository) project.repo_url = "(created by the git host)";
  if (auto valid = validateProject(project); !valid.ok()) return valid.error();
  auto build = prepare(project, spec);
  if (!build.ok()) return build.error();
  if (create_repository) {
    if (!options_.create_repository) {
      return Error{ErrorCode::kInvalidArgument,
                   "repo_url is required: no git host is configured to create repositories",
                   false,
                   {{"project.repo_url", "repo_url is required"}}};
    }
    // Refuse an existing project before creating anything outside the store.
    if (store_.getProject(project.id).ok()) {
      return makeError(ErrorCode::kConflict, "project \"" + project.id + "\" already exists");
    }
    auto url = options_.create_repository(project);
    if (!url.ok()) return url.error();
    project.repo_url = *url;
  }
  return store_.createProjectAndEnqueue(project, *build);
}

Result<Project> BuildService::createProject(Project project) {
  project.source = "api";
  project.created_at = domain::nowMs();
  if (auto valid = validateProject(project); !valid.ok()) return valid.error();
  return store_.createProject(project);
}

Result<Build> BuildService::cancel(const std::string& task_id) {
  auto after = store_.requestCancel(task_id, "cancelled through the API", options_.plan_deliveries);
  if (after.ok() && after->status == domain::BuildStatus::kCancelled && options_.on_terminal) {
    options_.on_terminal();
  }
  return after;
}

Result<Build> BuildService::retry(const std::string& task_id) {
  auto original = store_.getBuild(task_id);
  if (!original.ok()) return original.error();
  if (original->status != domain::BuildStatus::kFailed &&
      original->status != domain::BuildStatus::kCancelled) {
    return makeError(ErrorCode::kConflict, "build " + task_id + " is " +
                                               std::string(statusName(original->status)) +
                                               "; only failed or cancelled builds can be retried");
  }
  auto project = store_.getProject(original->project_id);
  if (!project.ok()) return project.error();
  auto build = prepare(*project, original->spec);
  if (!build.ok()) return build.error();
  build->retry_of = task_id;
  return store_.enqueueBuild(*build);
}

}  // namespace kiln::services
