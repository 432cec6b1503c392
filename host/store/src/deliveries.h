// What both store adapters check about the outbox's inputs. Internal to
// kiln_store.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/domain/result.h"
#include "kiln/ports/store.h"

namespace kiln::store {

// kInvalidArgument when a delivery lacks its notifier or event id or its
// payload is not a JSON object; kConflict when two share an event id.
inline std::optional<Error> validateNewDeliveries(const std::vector<ports::NewDelivery>& list) {
  std::set<std::string> ids;
  for (const ports::NewDelivery& d : list) {
    if (d.notifier.empty()) {
      return makeError(ErrorCode::kInvalidArgument, "a delivery needs its notifier instance");
    }
    if (d.event_id.empty()) {
      return makeError(ErrorCode::kInvalidArgument,
                       "the delivery for notifier \"" + d.notifier + "\" has no event id");
    }
    const nlohmann::json payload = nlohmann::json::parse(d.payload, nullptr, false);
    if (payload.is_discarded() || !payload.is_object()) {
      return makeError(ErrorCode::kInvalidArgument,
                       "the payload of delivery " + d.event_id + " is not a JSON object");
    }
    if (!ids.insert(d.event_id).second) {
      return makeError(ErrorCode::kConflict, "two deliveries share the event id " + d.event_id);
    }
  }
  return std::nullopt;
}

inline std::optional<Error> validateClaimLimit(int limit) {
  if (limit < 1 || limit > 100) {
    return makeError(ErrorCode::kInvalidArgument,
                     "a delivery claim takes 1 to 100 deliveries, not " + std::to_string(limit));
  }
  return std::nullopt;
}

}  // namespace kiln::store
