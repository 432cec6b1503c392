// Wiring of build notifications: which notifier instances a build tells
// (from the configuration), and how the dispatcher calls one.
#pragma once

#include "kiln/services/delivery_planner.h"
#include "kiln/services/notification_dispatcher.h"
#include "runtime.h"

namespace kiln::app {

// Planner options over the configuration: a build's notifiers are its
// project's `notifiers:` (or those under `defaults:`). A `notifier/webhook`
// instance without its own `url` delivers to the build's callback_url only.
services::DeliveryPlannerOptions deliveryPlanning(const Runtime& rt);

// The dispatcher's notify function: calls notify() of the delivery's
// notifier instance with {"event": <payload>, "target": <target>}. An
// instance that is not configured (any more) is a permanent failure.
// `rt` must outlive the dispatcher.
decltype(services::NotificationDispatcherOptions::notify) notifyThroughPlugins(const Runtime& rt);

}  // namespace kiln::app
