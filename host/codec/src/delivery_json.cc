#include "kiln/codec/delivery_json.h"

#include "kiln/codec/build_json.h"

namespace kiln::codec {

std::string encodeDeliveryEvent(const domain::DeliveryEvent& e) {
  using ordered = nlohmann::ordered_json;
  ordered data;
  data["task_id"] = e.task_id;
  data["project_id"] = e.project_id;
  data["status"] = domain::statusName(e.status);
  data["error_kind"] = e.error_kind == domain::ErrorKind::kNone
                           ? ordered(nullptr)
                           : ordered(domain::errorKindName(e.error_kind));
  data["result"] = ordered::parse(
      toJson(e.result).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  ordered event;
  event["id"] = e.id;
  event["type"] = e.type;
  event["timestamp"] = domain::formatTime(e.timestamp);
  event["data"] = std::move(data);
  return event.dump(-1, ' ', false, ordered::error_handler_t::replace);
}

nlohmann::json toJson(const domain::Delivery& d) {
  using nlohmann::json;
  auto time = [](const std::optional<domain::TimeMs>& t) {
    return t ? json(domain::formatTime(*t)) : json(nullptr);
  };
  json attempts = json::array();
  for (const domain::DeliveryAttempt& a : d.attempt_log) {
    attempts.push_back({{"attempt", a.attempt},
                        {"at", domain::formatTime(a.at)},
                        {"ok", a.ok},
                        {"detail", a.detail},
                        {"duration_ms", a.duration_ms}});
  }
  return json{{"id", d.id},
              {"notifier", d.notifier},
              {"target", d.target.empty() ? json(nullptr) : json(d.target)},
              {"event_id", d.event_id},
              {"state", domain::deliveryStateName(d.state)},
              {"attempts", attempts},
              {"next_attempt_at", time(d.next_attempt_at)},
              {"last_error", d.last_error.empty() ? json(nullptr) : json(d.last_error)},
              {"created_at", domain::formatTime(d.created_at)},
              {"delivered_at", time(d.delivered_at)}};
}

}  // namespace kiln::codec
