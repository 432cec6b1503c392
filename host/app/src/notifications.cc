#include "notifications.h"

#include <nlohmann/json.hpp>

#include "kiln/codec/delivery_json.h"

namespace kiln::app {

services::DeliveryPlannerOptions deliveryPlanning(const Runtime& rt) {
  services::DeliveryPlannerOptions o;
  o.encode = &codec::encodeDeliveryEvent;
  o.notifiers = [&rt](const domain::Build& build) {
    const auto project = rt.config.projects.find(build.project_id);
    const config::StageBindings& b =
        project != rt.config.projects.end() ? project->second.stages : rt.config.defaults.stages;
    std::vector<services::NotifierBinding> out;
    for (const std::string& name : b.notifiers.value_or(std::vector<std::string>{})) {
      services::NotifierBinding binding{name, false};
      const auto inst = rt.config.instances.find(name);
      if (inst != rt.config.instances.end()) {
        const domain::PluginRef webhook{domain::PluginKind::kNotifier, "webhook"};
        binding.needs_target =
            inst->second.plugin == webhook &&
            !(inst->second.config.is_object() && inst->second.config.contains("url"));
      }
      out.push_back(std::move(binding));
    }
    return out;
  };
  return o;
}

decltype(services::NotificationDispatcherOptions::notify) notifyThroughPlugins(const Runtime& rt) {
  return [&rt](const domain::Delivery& d,
               const std::function<bool()>& stopping) -> Result<std::string> {
    const auto it = rt.instances.find(d.notifier);
    if (it == rt.instances.end() || it->second->info().ref.kind != domain::PluginKind::kNotifier) {
      return makeError(ErrorCode::kNotFound, "notifier instance \"" + d.notifier +
                                                 "\" is not configured (any more); the "
                                                 "notification cannot be sent");
    }
    // The payload goes in byte for byte: the notifier sends what was planned.
    std::string request = "{\"event\":" + d.payload;
    if (!d.target.empty()) request += ",\"target\":" + nlohmann::json(d.target).dump();
    request += "}";
    plugins::CallOptions call;
    call.build_id = d.task_id;
    call.is_cancelled = stopping;
    auto answer = it->second->invoke(plugins::Operation::kNotify, request, call);
    if (!answer.ok()) return answer.error();
    const auto result = nlohmann::json::parse(*answer, nullptr, false);
    if (!result.is_object() || !result.value("delivered", false)) {
      return makeError(ErrorCode::kFailed,
                       "notifier instance \"" + d.notifier +
                           "\" did not report the notification delivered: " + *answer,
                       /*retryable=*/true);
    }
    const auto detail = result.find("detail");
    return detail != result.end() && detail->is_string() ? detail->get<std::string>()
                                                         : std::string("delivered");
  };
}

}  // namespace kiln::app
