#include "kiln/services/delivery_planner.h"

#include <utility>

namespace kiln::services {

DeliveryPlanner::DeliveryPlanner(DeliveryPlannerOptions options) : options_(std::move(options)) {}

std::vector<ports::NewDelivery> DeliveryPlanner::plan(const domain::Build& build,
                                                      const ports::Outcome& outcome) const {
  std::vector<ports::NewDelivery> out;
  if (!options_.notifiers || !options_.encode) return out;
  const std::vector<NotifierBinding> bindings = options_.notifiers(build);
  if (bindings.empty()) return out;
  const std::string target = build.spec.callback_url.value_or("");

  domain::DeliveryEvent event;
  event.type = domain::deliveryEventType(outcome.status);
  event.timestamp = options_.clock ? options_.clock() : domain::nowMs();
  event.task_id = build.task_id;
  event.project_id = build.project_id;
  event.status = outcome.status;
  event.error_kind = outcome.error_kind;
  // The same defaults the store applies when it records the outcome.
  if (event.error_kind == domain::ErrorKind::kNone) {
    if (outcome.status == domain::BuildStatus::kFailed)
      event.error_kind = domain::ErrorKind::kWorkload;
    if (outcome.status == domain::BuildStatus::kCancelled) {
      event.error_kind = domain::ErrorKind::kCancelled;
    }
  }
  event.result = outcome.result;
  if (event.result.error.empty()) event.result.error = outcome.error;

  for (const NotifierBinding& b : bindings) {
    if (b.needs_target && target.empty()) continue;
    ports::NewDelivery d;
    d.notifier = b.instance;
    d.target = target;
    d.event_id = domain::deliveryEventId(build.task_id, b.instance);
    event.id = d.event_id;
    d.payload = options_.encode(event);
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace kiln::services
