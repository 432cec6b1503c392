// The BuildExecutor that runs a build through its project's plugin
// instances: render the prompt with the template provider, run the code
// agent in a fresh workspace, report the agent's result. (Checkout, commit,
// push and CI are added by the build-execution milestone.)
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
};

using StageResolver = std::function<Result<ProjectStages>(const domain::Project& project)>;

struct PluginExecutorOptions {
  std::string workspace_root;  // one folder per build below it
  bool keep_failed_workspaces = false;
  std::chrono::seconds default_timeout{3600};  // when the spec sets none
};

class PluginExecutor : public ports::BuildExecutor {
 public:
  PluginExecutor(StageResolver resolver, PluginExecutorOptions options);
  ports::Outcome execute(const domain::Build& build, const domain::Project& project,
                         const ports::ExecutionControl& control) override;

  // The prompt for `build`: the spec's prompt, or its template rendered with
  // the variables and the built-ins (project, repo, branch, task_id).
  static Result<std::string> renderPrompt(const ProjectStages& stages, const domain::Build& build,
                                          const domain::Project& project);

 private:
  StageResolver resolver_;
  PluginExecutorOptions options_;
};

}  // namespace kiln::worker
