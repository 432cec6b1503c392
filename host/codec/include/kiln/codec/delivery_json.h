// JSON forms of notification deliveries: the event document notifiers get
// (kiln.notifier/1 "event") and the API view of a delivery with its attempts.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "kiln/domain/delivery.h"

namespace kiln::codec {

// The event document, as text with its keys in this order:
//   {"id", "type", "timestamp" (RFC 3339), "data": {"task_id", "project_id",
//    "status", "error_kind" (null when none), "result": BuildResult}}
// Invalid UTF-8 in the result (agent output) is replaced, never thrown.
std::string encodeDeliveryEvent(const domain::DeliveryEvent& event);

// GET /builds/{id}/deliveries: {"id", "notifier", "target", "event_id",
// "state", "attempts": [{"attempt", "at", "ok", "detail", "duration_ms"}],
// "next_attempt_at", "last_error", "created_at", "delivered_at"} (absent
// times and an empty last_error are null). The payload is not shown.
nlohmann::json toJson(const domain::Delivery& delivery);

}  // namespace kiln::codec
