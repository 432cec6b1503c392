// "Did you mean" suggestions for misspelt keys, instance names and plugins.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::config::internal {

// Damerau-Levenshtein distance (optimal string alignment): a swap of two
// adjacent characters counts as one edit, so "wrokers" is 1 from "workers".
size_t editDistance(std::string_view a, std::string_view b);

// The candidate nearest to `word`, if it is within max(1, |word| / 3) edits;
// ties go to the earlier candidate.
std::optional<std::string> nearest(std::string_view word,
                                   const std::vector<std::string>& candidates);

// "a, b, c".
std::string joinNames(const std::vector<std::string>& names);

}  // namespace kiln::config::internal
