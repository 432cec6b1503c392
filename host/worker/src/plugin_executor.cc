#include "kiln/worker/plugin_executor.h"

#include <fnmatch.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "kiln/git/workspace.h"

namespace kiln::worker {
namespace fs = std::filesystem;
using domain::BuildStatus;
using domain::ErrorKind;
using nlohmann::json;

namespace {

constexpr size_t kMaxOutputBytes = 64 * 1024;

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

// The build's full log: every stage and all agent output, kept on disk and
// served at GET /builds/{id}/log. Thread-safe (agent output may stream from
// the runner's thread).
class BuildLog {
 public:
  explicit BuildLog(const fs::path& file) {
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    out_.open(file, std::ios::app);
  }
  void line(std::string_view text) {
    std::lock_guard<std::mutex> lock(mu_);
    out_ << "[" << domain::formatTime(domain::nowMs()) << "] " << text << "\n";
    out_.flush();
  }
  void raw(std::string_view chunk) {
    std::lock_guard<std::mutex> lock(mu_);
    out_ << chunk;
    out_.flush();
  }

 private:
  std::mutex mu_;
  std::ofstream out_;
};

std::string tail(const std::string& s, size_t max) {
  return s.size() <= max ? s : "…" + s.substr(s.size() - max);
}

std::string firstLine(const std::string& s) {
  const auto start = s.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) return "Kiln build";
  const auto end = s.find('\n', start);
  std::string line = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
  if (line.size() > 72) line = line.substr(0, 69) + "...";
  return line;
}

// Turns the git host's credentials() answer into libgit2 credentials.
git::CredentialProvider credentialsFrom(const std::shared_ptr<plugins::PluginInstance>& host,
                                        const plugins::CallOptions& call) {
  if (!host) return {};
  return [host, call](const std::string& url, unsigned allowed) -> Result<git::Credentials> {
    json kinds = json::array();
    if (allowed & 1u) kinds.push_back("userpass");  // GIT_CREDENTIAL_USERPASS_PLAINTEXT
    if (allowed & 2u) kinds.push_back("ssh_key");   // GIT_CREDENTIAL_SSH_KEY
    const json request = {{"url", url}, {"allowed", kinds}};
    auto answer = host->invoke(plugins::Operation::kCredentials, request.dump(), call);
    if (!answer.ok()) return answer.error();
    const json c = json::parse(answer.value(), nullptr, false);
    git::Credentials out;
    const std::string type = c.is_object() ? c.value("type", "none") : "none";
    if (type == "userpass") {
      out.type = git::Credentials::Type::kUserPass;
      out.username = c.value("username", "");
      out.password = c.value("password", "");
    } else if (type == "ssh_key") {
      out.type = git::Credentials::Type::kSshKey;
      out.username = c.value("username", "git");
      out.private_key_path = c.value("private_key_path", "");
      out.public_key_path = c.value("public_key_path", "");
      out.passphrase = c.value("passphrase", "");
    }
    return out;
  };
}

}  // namespace

PluginExecutor::PluginExecutor(StageResolver resolver, PluginExecutorOptions options)
    : resolver_(std::move(resolver)), options_(std::move(options)) {}

std::string PluginExecutor::logPath(const std::string& task_id) const {
  return (fs::path(options_.data_dir) / "logs" / (task_id + ".log")).string();
}

std::string PluginExecutor::artifactDir(const std::string& task_id) const {
  return (fs::path(options_.data_dir) / "artifacts" / task_id).string();
}

Result<std::string> PluginExecutor::renderPrompt(const ProjectStages& stages,
                                                 const domain::Build& build,
                                                 const domain::Project& project) {
  if (!build.spec.template_name) return build.spec.prompt;
  if (!stages.template_provider) {
    return makeError(ErrorCode::kNotFound, "the build names template \"" +
                                               *build.spec.template_name + "\" but project \"" +
                                               project.id + "\" has no template_provider");
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
  BuildLog log(logPath(build.task_id));
  ports::Outcome outcome;
  const fs::path workspace = fs::path(options_.workspace_root) / build.task_id;
  std::error_code ec;
  auto fail = [&](ErrorKind kind, const std::string& error, bool retryable = false) {
    if (!options_.keep_failed_workspaces) fs::remove_all(workspace, ec);
    log.line("build failed (" + std::string(domain::errorKindName(kind)) + "): " + error);
    control.log("failed: " + error);
    outcome.status = BuildStatus::kFailed;
    outcome.error_kind = kind;
    outcome.error = error;
    outcome.retryable = retryable;
    outcome.result.success = false;
    outcome.result.error = error;
    outcome.result.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - started)
                                     .count();
    return outcome;
  };
  log.line("build " + build.task_id + " attempt " + std::to_string(build.attempts) +
           " of project " + project.id + " on branch " + build.branch);

  auto stages = resolver_(project);
  if (!stages.ok()) return fail(kindOf(stages.error()), stages.error().message);
  outcome.composition = stages->composition;
  if (!stages->agent)
    return fail(ErrorKind::kInvalidInput, "project \"" + project.id + "\" has no agent");
  auto prompt = renderPrompt(*stages, build, project);
  if (!prompt.ok()) return fail(kindOf(prompt.error()), prompt.error().message);

  // Host-enforced time limit for the whole attempt.
  const auto timeout =
      build.spec.timeout_s ? std::chrono::seconds(*build.spec.timeout_s) : options_.default_timeout;
  const auto deadline = started + timeout;
  std::atomic<bool> timed_out{false};
  auto should_stop = [&] {
    if (std::chrono::steady_clock::now() >= deadline) timed_out = true;
    return timed_out.load() || control.should_stop();
  };
  plugins::CallOptions call;
  call.build_id = build.task_id;
  call.is_cancelled = should_stop;
  call.on_event = [&](int32_t kind, std::string_view payload) {
    if (kind == 1) log.raw(payload);  // KILN_EVENT_OUTPUT: agent output, verbatim
  };

  // A fresh workspace with the project's repository checked out.
  fs::remove_all(workspace, ec);
  git::RemoteOptions remote;
  remote.credentials = credentialsFrom(stages->git_host, call);
  remote.cancelled = should_stop;
  log.line("cloning " + project.repo_url + " (" + build.branch + ")");
  auto cloned = git::cloneRepository({project.repo_url, build.branch, workspace.string(), remote});
  if (!cloned.ok() && cloned.error().code == ErrorCode::kNotFound &&
      build.branch != project.default_branch) {
    // A build on a branch the repository does not have yet starts it from
    // the project's default branch (a new feature branch).
    log.line("branch " + build.branch + " does not exist yet: starting it from " +
             project.default_branch);
    fs::remove_all(workspace, ec);
    cloned = git::cloneRepository(
        {project.repo_url, project.default_branch, workspace.string(), remote});
    if (cloned.ok()) {
      if (auto made = git::createBranch(workspace.string(), build.branch); !made.ok()) {
        return fail(ErrorKind::kInfrastructure, made.error().message);
      }
    }
  }
  if (!cloned.ok()) {
    if (cloned.error().code == ErrorCode::kCancelled && timed_out) {
      return fail(ErrorKind::kTimeout, "the build exceeded its time limit while cloning");
    }
    const bool unreachable = cloned.error().code == ErrorCode::kUnavailable;
    return fail(unreachable ? ErrorKind::kInfrastructure : kindOf(cloned.error()),
                "cannot check out the repository: " + cloned.error().message, unreachable);
  }

  const json request = {{"task_id", build.task_id},
                        {"project_id", project.id},
                        {"workspace", workspace.string()},
                        {"prompt", *prompt},
                        {"branch", build.branch},
                        {"timeout_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                           deadline - std::chrono::steady_clock::now())
                                           .count()},
                        {"variables", build.spec.variables}};
  log.line("running agent \"" + stages->agent->name() + "\" (" + stages->agent->info().ref.str() +
           ")");
  auto answer = stages->agent->invoke(plugins::Operation::kExecute, request.dump(), call);
  if (!answer.ok()) {
    if (timed_out) {
      return fail(ErrorKind::kTimeout,
                  "the build exceeded its time limit of " + std::to_string(timeout.count()) + " s");
    }
    return fail(kindOf(answer.error()), answer.error().message, answer.error().retryable);
  }
  const json r = json::parse(answer.value(), nullptr, false);
  domain::BuildResult& result = outcome.result;
  result.success = r.is_object() && r.value("success", false);
  result.output = tail(r.is_object() ? r.value("output", "") : "", kMaxOutputBytes);
  result.error = r.is_object() ? r.value("error", "") : "";
  if (should_stop()) {
    if (timed_out) {
      return fail(ErrorKind::kTimeout,
                  "the build exceeded its time limit of " + std::to_string(timeout.count()) + " s");
    }
    outcome.status = BuildStatus::kCancelled;  // the worker decides: cancelled or released
    fs::remove_all(workspace, ec);
    return outcome;
  }
  if (!result.success) {
    return fail(ErrorKind::kWorkload,
                result.error.empty() ? "the agent reported failure" : result.error);
  }

  // Artifacts the agent declared: copied out of the workspace to be served.
  if (r.is_object() && r.contains("artifacts") && r["artifacts"].is_array()) {
    const fs::path dir = artifactDir(build.task_id);
    for (const auto& a : r["artifacts"]) {
      const std::string name = a.value("name", "");
      fs::path src = a.value("path", "");
      if (src.is_relative()) src = workspace / src;
      if (name.empty() || name.find('/') != std::string::npos ||
          name.find("..") != std::string::npos || !fs::is_regular_file(src, ec)) {
        log.line("skipping artifact \"" + name + "\": not a file in the workspace");
        continue;
      }
      fs::create_directories(dir, ec);
      fs::copy_file(src, dir / name, fs::copy_options::overwrite_existing, ec);
      if (ec) {
        log.line("cannot keep artifact \"" + name + "\": " + ec.message());
        continue;
      }
      result.artifacts.push_back(
          {name, (dir / name).string(), static_cast<int64_t>(fs::file_size(dir / name, ec))});
    }
  }

  // Artifacts the project asks for by glob.
  if (!stages->artifact_globs.empty()) {
    const fs::path dir = artifactDir(build.task_id);
    for (auto it = fs::recursive_directory_iterator(workspace, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->path().filename() == ".git") {
        it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file(ec)) continue;
      const std::string rel = fs::relative(it->path(), workspace, ec).generic_string();
      const bool wanted = std::any_of(
          stages->artifact_globs.begin(), stages->artifact_globs.end(),
          [&](const std::string& g) { return fnmatch(g.c_str(), rel.c_str(), FNM_PATHNAME) == 0; });
      const std::string name = it->path().filename().string();
      const bool taken = std::any_of(result.artifacts.begin(), result.artifacts.end(),
                                     [&](const domain::Artifact& a) { return a.name == name; });
      if (!wanted || taken) continue;
      fs::create_directories(dir, ec);
      fs::copy_file(it->path(), dir / name, fs::copy_options::overwrite_existing, ec);
      if (!ec) {
        result.artifacts.push_back(
            {name, (dir / name).string(), static_cast<int64_t>(fs::file_size(dir / name, ec))});
      }
    }
  }

  auto changes = git::detectChanges(workspace.string());
  if (!changes.ok()) return fail(ErrorKind::kInfrastructure, changes.error().message);
  for (const auto& c : *changes) result.files_changed.push_back({c.path, c.change});
  log.line(std::to_string(result.files_changed.size()) + " file(s) changed");

  if (build.spec.auto_commit && !result.files_changed.empty()) {
    const std::string subject =
        build.spec.commit_message ? *build.spec.commit_message : firstLine(build.spec.prompt);
    const std::string message = subject + "\n\nKiln-Task: " + build.task_id + "\n";
    auto sha =
        git::commitAll({workspace.string(), message, options_.author_name, options_.author_email});
    if (!sha.ok()) return fail(ErrorKind::kInfrastructure, "commit failed: " + sha.error().message);
    result.commit_sha = *sha;
    log.line("committed " + *sha);

    if (build.spec.auto_push) {
      const std::string target =
          stages->push_to_task_branch ? "kiln/" + build.task_id : build.branch;
      log.line("pushing to " + target);
      auto pushed = git::push({workspace.string(), project.repo_url, build.branch, target, remote});
      if (!pushed.ok()) {
        const bool unreachable = pushed.error().code == ErrorCode::kUnavailable;
        return fail(unreachable ? ErrorKind::kInfrastructure : ErrorKind::kWorkload,
                    pushed.error().message, unreachable);
      }
      log.line("pushed " + *sha + " to " + target);
      if (stages->ci_trigger) {
        const json ci = {{"task_id", build.task_id},
                         {"project_id", project.id},
                         {"repo_url", project.repo_url},
                         {"branch", target},
                         {"commit_sha", *sha}};
        auto triggered = stages->ci_trigger->invoke(plugins::Operation::kTrigger, ci.dump(), call);
        // CI is reported, not a reason to fail a build whose change landed.
        log.line(triggered.ok() ? "CI triggered: " + triggered.value()
                                : "CI trigger failed: " + triggered.error().message);
      }
    }
  }

  outcome.status = BuildStatus::kCompleted;
  result.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - started)
                           .count();
  log.line("build completed in " + std::to_string(result.duration_ms) + " ms");
  fs::remove_all(workspace, ec);
  return outcome;
}

}  // namespace kiln::worker
