#include "serve.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "kiln/http/api.h"
#include "kiln/http/server.h"
#include "kiln/plugin.h"
#include "kiln/services/build_service.h"
#include "kiln/services/worker_pool.h"
#include "kiln/worker/plugin_executor.h"
#include "notifications.h"
#include "runtime.h"

namespace kiln::app {
namespace {

// Splits "host:port" / "[v6]:port"; false when malformed.
bool parseListen(const std::string& text, std::string* host, uint16_t* port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) return false;
  std::string h = text.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  try {
    size_t used = 0;
    const int p = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1 || p < 0 || p > 65535) return false;
    *port = static_cast<uint16_t>(p);
  } catch (const std::exception&) {
    return false;
  }
  *host = h.empty() ? "0.0.0.0" : h;
  return true;
}

std::string workerId() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return std::string(host) + ":" + std::to_string(getpid());
}

// Which instances serve a project: its own bindings from the configuration,
// or `defaults:` for projects created through the API.
worker::StageResolver stageResolver(const Runtime& rt) {
  return [&rt](const domain::Project& project) -> Result<worker::ProjectStages> {
    const auto it = rt.config.projects.find(project.id);
    const config::StageBindings& b =
        it != rt.config.projects.end() ? it->second.stages : rt.config.defaults.stages;
    worker::ProjectStages stages;
    auto pick = [&](const std::optional<std::string>& name,
                    const char* stage) -> Result<std::shared_ptr<plugins::PluginInstance>> {
      if (!name) return std::shared_ptr<plugins::PluginInstance>();
      const auto inst = rt.instances.find(*name);
      if (inst == rt.instances.end()) {
        return makeError(ErrorCode::kInvalidArgument,
                         std::string(stage) + " instance \"" + *name + "\" is not configured");
      }
      stages.composition.push_back(
          {stage, *name, inst->second->info().ref.str(), inst->second->info().version});
      return inst->second;
    };
    auto agent = pick(b.agent, "agent");
    if (!agent.ok()) return agent.error();
    if (!*agent) {
      return makeError(ErrorCode::kInvalidArgument,
                       "project \"" + project.id +
                           "\" has no agent: set one for it, or under defaults:, in the "
                           "configuration");
    }
    stages.agent = *agent;
    auto templates = pick(b.template_provider, "template_provider");
    if (!templates.ok()) return templates.error();
    stages.template_provider = *templates;
    auto git = pick(b.git_host, "git_host");
    if (!git.ok()) return git.error();
    stages.git_host = *git;
    auto ci = pick(b.ci_trigger, "ci_trigger");
    if (!ci.ok()) return ci.error();
    stages.ci_trigger = *ci;
    stages.push_to_task_branch = it != rt.config.projects.end()
                                     ? it->second.push_to_task_branch
                                     : rt.config.defaults.push_to_task_branch;
    stages.artifact_globs =
        it != rt.config.projects.end() ? it->second.artifacts : rt.config.defaults.artifacts;
    for (const auto& n : b.notifiers.value_or(std::vector<std::string>{})) {
      auto notifier = pick(n, "notifier");
      if (!notifier.ok()) return notifier.error();
      stages.notifiers.push_back(*notifier);
    }
    return stages;
  };
}

}  // namespace

int serve(const ServeOptions& options, std::ostream& out, std::ostream& err) {
  // Block the termination signals before any thread starts so that every
  // thread inherits the mask and only sigwait() below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto booted = boot(options.config_path, /*create_instances=*/true);
  for (const auto& e : booted.errors) err << e << "\n";
  if (!booted.runtime) {
    err << "kiln serve: not starting: the configuration has errors\n";
    return 1;
  }
  Runtime& rt = *booted.runtime;

  http::ServerOptions so;
  so.host = rt.config.server.listen_host;
  so.port = rt.config.server.listen_port;
  so.max_body_bytes = rt.config.server.max_body_bytes;
  if (options.listen_override && !parseListen(*options.listen_override, &so.host, &so.port)) {
    err << "kiln serve: --listen must be HOST:PORT, got \"" << *options.listen_override << "\"\n";
    return 2;
  }

  auto store = openStore(rt.config.store);
  if (!store.ok()) {
    err << "kiln serve: cannot open the store: " << store.error().message << "\n";
    return 1;
  }
  if (auto synced = syncConfiguredProjects(rt.config, **store); !synced.ok()) {
    err << "kiln serve: " << synced.error().message << "\n";
    return 1;
  }

  services::BuildServiceOptions bo;
  bo.max_prompt_bytes = rt.config.server.max_prompt_bytes;
  bo.max_attempts = rt.config.server.max_attempts;
  const worker::StageResolver resolve = stageResolver(rt);
  // A dry-run render: the template must exist and get its required variables.
  bo.check_template = [&resolve](const domain::Project& project,
                                 const domain::Build& build) -> Result<void> {
    auto stages = resolve(project);
    if (!stages.ok()) return stages.error();
    auto rendered = worker::PluginExecutor::renderPrompt(*stages, build, project);
    if (rendered.ok()) return {};
    // The provider's status says which field is wrong (kiln.template-provider/1):
    // NOT_FOUND is the template, INVALID_ARGUMENT its variables.
    Error e = rendered.error();
    e.fields.emplace_back(e.code == ErrorCode::kNotFound ? "template" : "variables", e.message);
    return e;
  };
  bo.create_repository = [&resolve](const domain::Project& project) -> Result<std::string> {
    auto stages = resolve(project);
    if (!stages.ok()) return stages.error();
    if (!stages->git_host || !stages->git_host->supports(plugins::Operation::kCreateRepository)) {
      return Error{ErrorCode::kInvalidArgument,
                   "repo_url is required: the default git host cannot create repositories",
                   false,
                   {{"project.repo_url", "repo_url is required"}}};
    }
    const nlohmann::json request = {{"name", project.id},
                                    {"description", "Created by kiln for project " + project.id},
                                    {"private", true},
                                    {"default_branch", project.default_branch}};
    auto created = stages->git_host->invoke(plugins::Operation::kCreateRepository, request.dump());
    if (!created.ok()) return created.error();
    const auto answer = nlohmann::json::parse(created.value(), nullptr, false);
    if (!answer.is_object() || !answer.contains("repo_url") || !answer["repo_url"].is_string()) {
      return makeError(ErrorCode::kPluginBug, "git host \"" + stages->git_host->name() +
                                                  "\" created a repository without a repo_url");
    }
    return answer["repo_url"].get<std::string>();
  };
  // Notifications: planned into the outbox with each terminal transition,
  // sent by the dispatcher (woken when a build becomes terminal).
  services::NotificationDispatcherOptions no;
  no.owner = workerId();
  no.notify = notifyThroughPlugins(rt);
  no.first_backoff = std::chrono::seconds(rt.config.server.delivery_backoff_s);
  no.max_age = std::chrono::seconds(rt.config.server.delivery_max_age_s);
  services::NotificationDispatcher dispatcher(**store, no);
  const services::DeliveryPlanner planner(deliveryPlanning(rt));
  const ports::DeliveryPlan plan_deliveries =
      [&planner](const domain::Build& b, const ports::Outcome& o) { return planner.plan(b, o); };
  bo.plan_deliveries = plan_deliveries;
  bo.on_terminal = [&dispatcher] { dispatcher.wake(); };
  services::BuildService builds(**store, bo);
  worker::PluginExecutorOptions eo;
  eo.data_dir = rt.config.server.data_dir.empty()
                    ? (std::filesystem::path(rt.config.base_dir) / "kiln-data").string()
                    : rt.config.server.data_dir;
  eo.workspace_root = (std::filesystem::path(eo.data_dir) / "workspaces").string();
  eo.author_name = rt.config.server.git_author_name;
  eo.author_email = rt.config.server.git_author_email;
  eo.keep_failed_workspaces = rt.config.server.keep_failed_workspaces;
  worker::PluginExecutor executor(resolve, eo);
  services::WorkerPoolOptions wo;
  wo.slots = rt.config.server.workers;
  wo.worker_id = workerId();
  wo.lease = std::chrono::seconds(rt.config.server.lease_s);
  wo.heartbeat = std::chrono::milliseconds(rt.config.server.lease_s * 1000 / 3);
  wo.plan_deliveries = plan_deliveries;
  wo.on_terminal = [&dispatcher] { dispatcher.wake(); };
  services::WorkerPool pool(**store, executor, wo);

  auto router = std::make_shared<http::Router>();
  router->add("GET", "/healthz",
              [](const http::Request&) { return http::jsonResponse(200, R"({"status":"ok"})"); });
  const nlohmann::json version = {
      {"name", "kiln"},
      {"version", KILN_VERSION},
      {"plugin_abi",
       std::to_string(KILN_ABI_VERSION_MAJOR) + "." + std::to_string(KILN_ABI_VERSION_MINOR)},
      {"plugins", rt.registry->list().size()},
      {"store",
       rt.config.store.kind == config::StoreConfig::Kind::kSqlite ? "sqlite" : "postgres"}};
  router->add("GET", "/version", [body = version.dump()](const http::Request&) {
    return http::jsonResponse(200, body);
  });
  http::addBuildApi(*router, builds);
  http::addDeliveryApi(*router, **store);
  http::addBuildFilesApi(
      *router, **store, [&executor](const std::string& id) { return executor.logPath(id); },
      [&executor](const std::string& id) { return executor.artifactDir(id); });

  http::Server server(so, router);
  if (auto started = server.start(); !started.ok()) {
    err << "kiln serve: " << started.error().message << "\n";
    return 1;
  }
  pool.start();
  dispatcher.start();
  const std::string shown_host =
      so.host.find(':') != std::string::npos ? "[" + so.host + "]" : so.host;
  const size_t n_inst = rt.instances.size(), n_proj = rt.config.projects.size();
  out << "kiln " << KILN_VERSION << ": listening on http://" << shown_host << ":" << server.port()
      << " (" << n_inst << " plugin instance" << (n_inst == 1 ? "" : "s") << ", " << n_proj
      << " project" << (n_proj == 1 ? "" : "s") << ", " << wo.slots << " worker"
      << (wo.slots == 1 ? "" : "s") << ")" << std::endl;

  int received = 0;
  sigwait(&signals, &received);
  out << "kiln: received " << (received == SIGTERM ? "SIGTERM" : "SIGINT") << ", shutting down"
      << std::endl;
  const auto t0 = std::chrono::steady_clock::now();
  server.stop();
  pool.drain(std::chrono::seconds(rt.config.server.shutdown_grace_s));
  dispatcher.stop();     // its notifiers are plugin instances
  rt.instances.clear();  // destroy instances before their libraries unload
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  out << "kiln: stopped in " << ms << " ms" << std::endl;
  return 0;
}

}  // namespace kiln::app
