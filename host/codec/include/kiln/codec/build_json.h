// JSON forms of the domain: the API contract (snake_case, as the seeds name
// the fields) and what the stores persist. One place, used by both.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/domain/build.h"

namespace kiln::codec {

using nlohmann::json;

// Parses a BuildSpec from an API request body: unknown fields, wrong types
// and non-string variables are errors (field + what to fix). `allowed_extra`
// names fields the caller handles itself (e.g. "project_id" for
// create-and-build); they are skipped, not rejected.
std::optional<domain::BuildSpec> parseSpec(const json& body,
                                           std::vector<domain::FieldError>* errors,
                                           const std::vector<std::string>& allowed_extra = {});

json toJson(const domain::BuildSpec& spec);
json toJson(const domain::BuildResult& result);
json toJson(const std::vector<domain::CompositionEntry>& composition);
json toJson(const domain::BuildEvent& event);
json toJson(const domain::Project& project);
// The API representation of a build (without events).
json toJson(const domain::Build& build);

// Readers for stored documents (written by toJson); lenient about absent
// fields, so that older rows stay readable.
domain::BuildSpec specFromStored(const json& j);
domain::BuildResult resultFromStored(const json& j);
std::vector<domain::CompositionEntry> compositionFromStored(const json& j);

}  // namespace kiln::codec
