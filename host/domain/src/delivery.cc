#include "kiln/domain/delivery.h"

namespace kiln::domain {

std::string_view deliveryStateName(DeliveryState s) {
  switch (s) {
    case DeliveryState::kPending: return "pending";
    case DeliveryState::kDelivered: return "delivered";
    case DeliveryState::kFailed: return "failed";
  }
  return "pending";
}

std::optional<DeliveryState> parseDeliveryState(std::string_view name) {
  for (DeliveryState s :
       {DeliveryState::kPending, DeliveryState::kDelivered, DeliveryState::kFailed}) {
    if (deliveryStateName(s) == name) return s;
  }
  return std::nullopt;
}

std::string deliveryEventType(BuildStatus terminal_status) {
  return "build." + std::string(statusName(terminal_status));
}

std::string deliveryEventId(std::string_view task_id, std::string_view notifier) {
  std::string id = "msg_" + std::string(task_id) + "_";
  for (char c : notifier) id += c == '.' ? '~' : c;
  return id;
}

}  // namespace kiln::domain
