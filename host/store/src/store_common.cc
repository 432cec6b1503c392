#include "store_common.h"

namespace kiln::store::common {

Error notFoundBuild(const std::string& task_id) {
  return makeError(ErrorCode::kNotFound, "build " + task_id + " not found");
}

Error notFoundProject(const std::string& id) {
  return makeError(ErrorCode::kNotFound, "project " + quoted(id) + " not found");
}

Error projectExists(const std::string& id) {
  return makeError(ErrorCode::kConflict, "project " + quoted(id) + " already exists");
}

Error leaseLost(const std::string& task_id) {
  return makeError(ErrorCode::kConflict,
                   "lease for build " + task_id +
                       " is no longer held by this worker (it was released, or expired and the "
                       "build went to another attempt)");
}

std::optional<Error> validateProject(const domain::Project& p) {
  auto invalid = [&](const std::string& what) {
    return makeError(ErrorCode::kInvalidArgument, "project " + quoted(p.id) + ": " + what);
  };
  if (p.id.empty()) return makeError(ErrorCode::kInvalidArgument, "a project needs an id");
  if (p.default_branch.empty()) return invalid("default_branch must not be empty");
  if (p.source != "api" && p.source != "config") {
    return invalid("source must be \"api\" or \"config\", got " + quoted(p.source));
  }
  if (p.max_running_builds < 1) return invalid("max_running_builds must be at least 1");
  if (p.max_pending_builds < 0) return invalid("max_pending_builds must not be negative");
  if (p.max_timeout_s < 1) return invalid("max_timeout_s must be at least 1");
  return std::nullopt;
}

}  // namespace kiln::store::common
