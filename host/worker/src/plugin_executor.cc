#include "kiln/worker/plugin_executor.h"

#include <atomic>
#include <filesystem>

#include <nlohmann/json.hpp>

namespace kiln::worker {
namespace fs = std::filesystem;
using domain::BuildStatus;
using domain::ErrorKind;
using nlohmann::json;

namespace {

ports::Outcome failed(ErrorKind kind, std::string error) {
  ports::Outcome o;
  o.status = BuildStatus::kFailed;
  o.error_kind = kind;
  o.error = std::move(error);
  o.result.success = false;
  o.result.error = o.error;
  return o;
}

ErrorKind kindOf(const Error& e) {
  switch (e.code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kNotFound: return ErrorKind::kInvalidInput;
    case ErrorCode::kTimeout: return ErrorKind::kTimeout;
    case ErrorCode::kCancelled: return ErrorKind::kCancelled;
    case ErrorCode::kFailed: return ErrorKind::kWorkload;
    default: return ErrorKind::kInfrastructure;
  }
}

}  // namespace

PluginExecutor::PluginExecutor(StageResolver resolver, PluginExecutorOptions options)
    : resolver_(std::move(resolver)), options_(std::move(options)) {}

Result<std::string> PluginExecutor::renderPrompt(const ProjectStages& stages,
                                                 const domain::Build& build,
                                                 const domain::Project& project) {
  if (!build.spec.template_name) return build.spec.prompt;
  if (!stages.template_provider) {
    return makeError(ErrorCode::kInvalidArgument,
                     "the build names template \"" + *build.spec.template_name +
                         "\" but project \"" + project.id + "\" has no template_provider");
  }
  json variables = build.spec.variables;
  variables["prompt"] = build.spec.prompt;
  const json request = {{"template", *build.spec.template_name},
                        {"variables", variables},
                        {"builtins",
                         {{"project", project.id},
                          {"repo", project.repo_url},
                          {"branch", build.branch},
                          {"task_id", build.task_id}}}};
  auto rendered = stages.template_provider->invoke(plugins::Operation::kRender, request.dump());
  if (!rendered.ok()) return rendered.error();
  const json result = json::parse(rendered.value(), nullptr, false);
  if (!result.is_object() || !result.contains("prompt") || !result["prompt"].is_string()) {
    return makeError(ErrorCode::kPluginBug, "template provider \"" +
                                                stages.template_provider->name() +
                                                "\" answered without a \"prompt\" string");
  }
  return result["prompt"].get<std::string>();
}

ports::Outcome PluginExecutor::execute(const domain::Build& build, const domain::Project& project,
                                       const ports::ExecutionControl& control) {
  const auto started = std::chrono::steady_clock::now();
  auto stages = resolver_(project);
  if (!stages.ok()) return failed(kindOf(stages.error()), stages.error().message);
  if (!stages->agent) {
    return failed(ErrorKind::kInvalidInput, "project \"" + project.id + "\" has no agent");
  }
  auto prompt = renderPrompt(*stages, build, project);
  if (!prompt.ok()) return failed(kindOf(prompt.error()), prompt.error().message);

  const fs::path workspace = fs::path(options_.workspace_root) / build.task_id;
  std::error_code ec;
  fs::remove_all(workspace, ec);
  fs::create_directories(workspace, ec);
  if (ec) {
    return failed(ErrorKind::kInfrastructure,
                  "cannot create workspace " + workspace.string() + ": " + ec.message());
  }

  const auto timeout =
      build.spec.timeout_s ? std::chrono::seconds(*build.spec.timeout_s) : options_.default_timeout;
  const auto deadline = started + timeout;
  std::atomic<bool> timed_out{false};
  plugins::CallOptions call;
  call.build_id = build.task_id;
  call.is_cancelled = [&] {
    if (std::chrono::steady_clock::now() >= deadline) timed_out = true;
    return timed_out || control.should_stop();
  };
  call.on_event = [&](int32_t kind, std::string_view payload) {
    if (kind == 1) control.log(payload);  // KILN_EVENT_OUTPUT
  };
  const json request = {
      {"task_id", build.task_id},
      {"project_id", project.id},
      {"workspace", workspace.string()},
      {"prompt", *prompt},
      {"branch", build.branch},
      {"timeout_ms", std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()},
      {"variables", build.spec.variables}};
  auto answer = stages->agent->invoke(plugins::Operation::kExecute, request.dump(), call);

  ports::Outcome outcome;
  outcome.composition = stages->composition;
  if (!answer.ok()) {
    outcome = failed(
        timed_out ? ErrorKind::kTimeout : kindOf(answer.error()),
        timed_out ? "the build exceeded its time limit of " + std::to_string(timeout.count()) + " s"
                  : answer.error().message);
    outcome.composition = stages->composition;
  } else {
    const json r = json::parse(answer.value(), nullptr, false);
    outcome.result.success = r.is_object() && r.value("success", false);
    outcome.result.output = r.is_object() ? r.value("output", "") : "";
    outcome.result.error = r.is_object() ? r.value("error", "") : "";
    if (outcome.result.success) {
      outcome.status = BuildStatus::kCompleted;
    } else {
      outcome.status = BuildStatus::kFailed;
      outcome.error_kind = ErrorKind::kWorkload;
      outcome.error =
          outcome.result.error.empty() ? "the agent reported failure" : outcome.result.error;
    }
  }
  outcome.result.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - started)
                                   .count();
  if (outcome.status != BuildStatus::kFailed || !options_.keep_failed_workspaces) {
    fs::remove_all(workspace, ec);
  }
  return outcome;
}

}  // namespace kiln::worker
