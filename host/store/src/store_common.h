// What both store adapters say and check the same way: error messages and
// the checks of a project before it is written. One place, so that SQLite
// and PostgreSQL cannot drift apart (the contract suite compares them).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "kiln/domain/build.h"
#include "kiln/domain/result.h"

namespace kiln::store::common {

inline std::string str(std::string_view s) {
  return std::string(s);
}
inline std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

Error notFoundBuild(const std::string& task_id);
Error notFoundProject(const std::string& id);
Error projectExists(const std::string& id);
Error leaseLost(const std::string& task_id);

// The invariants the store keeps for a project (the API validates more).
std::optional<Error> validateProject(const domain::Project& p);

}  // namespace kiln::store::common
