#include <nlohmann/json.hpp>

#include "kiln/codec/delivery_json.h"
#include "kiln/http/api.h"

namespace kiln::http {

void addDeliveryApi(Router& router, ports::Store& store) {
  router.add("GET", "/builds/{task_id}/deliveries", [&store](const Request& req) -> Response {
    auto deliveries = store.listDeliveries(req.params.at("task_id"));
    if (!deliveries.ok()) return problemFor(deliveries.error());
    nlohmann::json list = nlohmann::json::array();
    for (const domain::Delivery& d : *deliveries) list.push_back(codec::toJson(d));
    // A notifier's error message may quote a receiver's bytes: never throw on them.
    return jsonResponse(200, nlohmann::json{{"deliveries", list}}.dump(
                                 -1, ' ', false, nlohmann::json::error_handler_t::replace));
  });
}

}  // namespace kiln::http
