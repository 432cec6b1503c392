// Builds: the seed's BuildSpec and BuildResult, the Build record, its
// statuses and the one place where status transitions are decided.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::domain {

// Milliseconds since the Unix epoch (UTC); what stores persist.
using TimeMs = int64_t;
TimeMs nowMs();
// RFC 3339 UTC with milliseconds: "2026-11-21T07:22:48.123Z".
std::string formatTime(TimeMs t);

// Statuses exactly as the seed names them.
enum class BuildStatus { kPending, kRunning, kCompleted, kFailed, kCancelled };
std::string_view statusName(BuildStatus s);
std::optional<BuildStatus> parseStatus(std::string_view name);
bool isTerminal(BuildStatus s);

// Why a build failed (or was cancelled); kNone while it has not.
enum class ErrorKind { kNone, kWorkload, kInfrastructure, kTimeout, kInvalidInput, kCancelled };
std::string_view errorKindName(ErrorKind k);  // "", "workload", "infrastructure", ...
std::optional<ErrorKind> parseErrorKind(std::string_view name);

// Why a transition happens; some transitions are allowed for one reason only.
enum class TransitionReason {
  kClaimed,       // pending -> running: a worker took it
  kFinished,      // running -> completed | failed: the executor returned
  kCancelled,     // pending | running -> cancelled
  kLeaseExpired,  // running -> pending (new attempt) | failed (attempts exhausted)
  kReleased,      // running -> pending: a draining worker gave it back
};

// The state machine: true when `from` -> `to` is allowed for `reason`.
// Terminal statuses never change.
bool canTransition(BuildStatus from, BuildStatus to, TransitionReason reason);

struct BuildSpec {
  std::string prompt;                        // required
  std::optional<std::string> template_name;  // JSON "template"
  std::map<std::string, std::string> variables;
  bool auto_commit = false;
  bool auto_push = false;
  std::optional<std::string> callback_url;
  std::optional<std::string> branch;
  std::optional<std::string> commit_message;
  std::optional<int64_t> timeout_s;

  friend bool operator==(const BuildSpec&, const BuildSpec&) = default;
};

struct FileChange {
  std::string path;
  std::string change;  // "added" | "modified" | "deleted"
  friend bool operator==(const FileChange&, const FileChange&) = default;
};

struct Artifact {
  std::string name;
  std::string path;  // where the host keeps it
  int64_t size_bytes = 0;
  friend bool operator==(const Artifact&, const Artifact&) = default;
};

struct BuildResult {
  bool success = false;
  std::string output;
  std::string error;
  std::string commit_sha;
  std::vector<FileChange> files_changed;
  int64_t duration_ms = 0;
  std::vector<Artifact> artifacts;
  friend bool operator==(const BuildResult&, const BuildResult&) = default;
};

// Which plugin instance served a stage, for provenance.
struct CompositionEntry {
  std::string stage;     // "agent", "template_provider", ...
  std::string instance;  // instance name in the config
  std::string plugin;    // "<kind>/<id>"
  std::string version;   // the plugin's version
  friend bool operator==(const CompositionEntry&, const CompositionEntry&) = default;
};

struct Build {
  std::string task_id;  // UUIDv7: time-ordered, so ids sort by creation
  std::string project_id;
  std::string branch;  // effective: spec.branch or the project's default
  BuildStatus status = BuildStatus::kPending;
  BuildSpec spec;
  std::optional<BuildResult> result;
  int attempts = 0;  // claims so far
  int max_attempts = 3;
  ErrorKind error_kind = ErrorKind::kNone;
  std::string error;  // human-readable cause when failed/cancelled
  TimeMs created_at = 0;
  std::optional<TimeMs> started_at;
  std::optional<TimeMs> finished_at;
  std::string worker_id;
  std::vector<CompositionEntry> composition;
  std::optional<std::string> retry_of;
  bool cancel_requested = false;
};

// One recorded transition (or noteworthy moment) of a build.
struct BuildEvent {
  int64_t seq = 0;  // store-assigned, increasing per build
  std::string task_id;
  TimeMs at = 0;
  std::optional<BuildStatus> from;  // nullopt for creation
  BuildStatus to = BuildStatus::kPending;
  int attempt = 0;
  std::string message;
};

struct Project {
  std::string id;
  std::string repo_url;
  std::string default_branch = "main";
  std::string source = "api";  // "api" or "config"
  int max_running_builds = 1;
  int max_pending_builds = 100;
  int max_timeout_s = 3600;
  TimeMs created_at = 0;
};

// A new UUIDv7 ("018f…-7…-…") from the given time.
std::string newTaskId(TimeMs now = nowMs());
bool isValidTaskId(std::string_view id);

// Validation of a spec with messages that say what to fix.
struct FieldError {
  std::string field;  // JSON field name, e.g. "prompt", "variables.name"
  std::string message;
};
struct SpecLimits {
  int64_t max_prompt_bytes = 64 * 1024;
  int64_t max_timeout_s = 3600;
};
std::vector<FieldError> validateSpec(const BuildSpec& spec, const SpecLimits& limits);

// Project ids: ^[a-z0-9][a-z0-9._-]{0,62}$, as in the configuration.
bool isValidProjectId(std::string_view id);

}  // namespace kiln::domain
