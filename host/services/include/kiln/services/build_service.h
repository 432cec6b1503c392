// BuildService: the seed's steps 1-4 — validate, persist, enqueue, answer —
// plus cancel and retry. Depends only on the Store port.
#pragma once

#include <functional>
#include <string>

#include "kiln/domain/build.h"
#include "kiln/domain/result.h"
#include "kiln/ports/store.h"

namespace kiln::services {

struct BuildServiceOptions {
  int64_t max_prompt_bytes = 64 * 1024;
  int max_attempts = 3;
  // Checks a build's template and variables against the project's template
  // provider before anything is stored, so that an unknown template or a
  // missing required variable is a 400, not a failed build. Errors should be
  // kInvalidArgument / kNotFound with `fields`; empty: not checked.
  std::function<Result<void>(const domain::Project&, const domain::Build&)> check_template;
  // Creates the repository of a new project through its git host and
  // returns the clone URL; used by createAndBuild when no repo_url is given.
  std::function<Result<std::string>(const domain::Project&)> create_repository;
  // The notifications of a pending build cancelled at once (queued with the
  // cancellation), and what to call after such a cancel (e.g. to wake the
  // notification dispatcher). Empty: none.
  ports::DeliveryPlan plan_deliveries;
  std::function<void()> on_terminal;
};

class BuildService {
 public:
  BuildService(ports::Store& store, BuildServiceOptions options);

  // Validates `spec` against the project's limits and enqueues a build.
  // kInvalidArgument (with fields), kNotFound (project), kResourceExhausted.
  Result<domain::Build> submit(const std::string& project_id, const domain::BuildSpec& spec);
  // Registers the project and enqueues its first build atomically.
  Result<domain::Build> createAndBuild(const domain::Project& project,
                                       const domain::BuildSpec& spec);
  // Validates and creates a project (source "api").
  Result<domain::Project> createProject(domain::Project project);
  Result<domain::Build> cancel(const std::string& task_id);
  // A failed or cancelled build again, as a new build with retry_of set.
  Result<domain::Build> retry(const std::string& task_id);

  ports::Store& store() { return store_; }

 private:
  Result<domain::Build> prepare(const domain::Project& project, const domain::BuildSpec& spec);

  ports::Store& store_;
  BuildServiceOptions options_;
};

// Checks a project's fields (id, repo_url, default_branch, limits).
Result<void> validateProject(const domain::Project& project);

}  // namespace kiln::services
