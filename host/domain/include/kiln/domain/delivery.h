// Notification deliveries: the outbox records of a build's notifications
// (one per notifier instance and build) and the event they carry.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/domain/build.h"

namespace kiln::domain {

// pending: waiting for its next attempt (or being attempted); delivered: a
// notifier accepted it; failed: given up (a permanent error, or retries
// exhausted). delivered and failed never change.
enum class DeliveryState { kPending, kDelivered, kFailed };
std::string_view deliveryStateName(DeliveryState s);
std::optional<DeliveryState> parseDeliveryState(std::string_view name);

// One try of a delivery.
struct DeliveryAttempt {
  int attempt = 0;     // 1, 2, ... per delivery
  TimeMs at = 0;       // when it started
  bool ok = false;     // the notifier accepted it
  std::string detail;  // "HTTP 204", or why it failed
  int64_t duration_ms = 0;
  friend bool operator==(const DeliveryAttempt&, const DeliveryAttempt&) = default;
};

struct Delivery {
  int64_t id = 0;  // store-assigned
  std::string task_id;
  std::string notifier;  // plugin instance name
  std::string target;    // where to (e.g. the build's callback_url); may be empty
  std::string event_id;  // the message id, the same on every attempt (webhook-id)
  std::string payload;   // the event document (JSON text), as planned
  DeliveryState state = DeliveryState::kPending;
  int attempts = 0;                       // attempts recorded so far
  std::optional<TimeMs> next_attempt_at;  // when pending: when it is due
  TimeMs created_at = 0;
  std::optional<TimeMs> delivered_at;
  std::string last_error;                    // of the latest failed attempt; "" after success
  std::vector<DeliveryAttempt> attempt_log;  // oldest first; filled by listDeliveries only
};

// What happened to a build, as notifiers are told (the event document of
// kiln.notifier/1). `type` is "build.completed", "build.failed" or
// "build.cancelled".
struct DeliveryEvent {
  std::string id;  // the event id: "msg_<task_id>_<notifier>"
  std::string type;
  TimeMs timestamp = 0;
  std::string task_id;
  std::string project_id;
  BuildStatus status = BuildStatus::kCompleted;
  ErrorKind error_kind = ErrorKind::kNone;
  BuildResult result;
};

// "build.completed" | "build.failed" | "build.cancelled" ("build.<status>").
std::string deliveryEventType(BuildStatus terminal_status);

// The event id of a build's notification by one notifier instance. A
// Standard Webhooks id must not contain ".", which instance names may: it
// becomes "~" (never in an instance name, so distinct names stay distinct).
std::string deliveryEventId(std::string_view task_id, std::string_view notifier);

}  // namespace kiln::domain
