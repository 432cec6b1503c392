// Which notifications a finished build sends: one delivery per notifier
// instance of its project, planned right before the worker records the
// terminal transition so that both land in one transaction (the outbox).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kiln/domain/build.h"
#include "kiln/domain/delivery.h"
#include "kiln/ports/store.h"

namespace kiln::services {

// A notifier instance serving a project.
struct NotifierBinding {
  std::string instance;  // plugin instance name
  // It delivers only to the build's callback_url (a webhook notifier without
  // its own url): no callback_url, no delivery.
  bool needs_target = false;
};

struct DeliveryPlannerOptions {
  // The notifier instances of a build's project, in configuration order.
  std::function<std::vector<NotifierBinding>(const domain::Build& build)> notifiers;
  // Renders the event document (codec::encodeDeliveryEvent in production;
  // this layer knows no JSON).
  std::function<std::string(const domain::DeliveryEvent& event)> encode;
  std::function<domain::TimeMs()> clock;  // empty: domain::nowMs
};

class DeliveryPlanner {
 public:
  explicit DeliveryPlanner(DeliveryPlannerOptions options);

  // The deliveries of `build` ending as `outcome` says (its final status,
  // error kind and result; result.error defaults to outcome.error as the
  // store does). Each has target = the build's callback_url ("" when none),
  // event id domain::deliveryEventId(task_id, instance) and event type
  // "build.<status>". Thread-safe.
  std::vector<ports::NewDelivery> plan(const domain::Build& build,
                                       const ports::Outcome& outcome) const;

 private:
  DeliveryPlannerOptions options_;
};

}  // namespace kiln::services
