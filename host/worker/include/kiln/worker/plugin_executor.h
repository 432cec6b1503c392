// The BuildExecutor that runs a build through its project's plugin
// instances: check the repository out (credentials from the git host),
// render the prompt with the template provider, run the code agent in the
// checkout, commit and push what changed (auto_commit / auto_push), trigger
// CI, and keep the full log and the declared artifacts.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kiln/domain/result.h"
#include "kiln/plugins/registry.h"
#include "kiln/ports/executor.h"

namespace kiln::worker {

// The instances that serve one project's stages, and the provenance record.
struct ProjectStages {
  std::shared_ptr<plugins::PluginInstance> agent;
  std::shared_ptr<plugins::PluginInstance> template_provider;  // may be null
  std::shared_ptr<plugins::PluginInstance> git_host;           // may be null
  std::shared_ptr<plugins::PluginInstance> ci_trigger;         // may be null
  std::vector<std::shared_ptr<plugins::PluginInstance>> notifiers;
  std::vector<domain::CompositionEntry> composition;
  bool push_to_task_branch = false;         // push to kiln/<task_id> instead of the build's branch
  std::vector<std::string> artifact_globs;  // workspace files kept as artifacts
};

using StageResolver = std::function<Result<ProjectStages>(const domain::Project& project)>;

struct PluginExecutorOptions {
  std::string workspace_root;  // one folder per build below it
  std::string data_dir;        // logs/<task_id>.log and artifacts/<task_id>/ below it
  bool keep_failed_workspaces = false;
  std::chrono::seconds default_timeout{3600};  // when the spec sets none
  std::string author_name = "Kiln";            // of the commits kiln makes
  std::string author_email = "kiln@localhost";
};

class PluginExecutor : public ports::BuildExecutor {
 public:
  PluginExecutor(StageResolver resolver, PluginExecutorOptions options);
  ports::Outcome execute(const domain::Build& build, const domain::Project& project,
                         const ports::ExecutionControl& control) override;

  // Where a build's full log and its artifacts are kept.
  std::string logPath(const std::string& task_id) const;
  std::string artifactDir(const std::string& task_id) const;

  // The prompt for `build`: the spec's prompt, or its template rendered with
  // the variables and the built-ins (project, repo, branch, task_id).
  static Result<std::string> renderPrompt(const ProjectStages& stages, const domain::Build& build,
                                          const domain::Project& project);

 private:
  StageResolver resolver_;
  PluginExecutorOptions options_;
};

}  // namespace kiln::worker
