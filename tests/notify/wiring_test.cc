// The composition root's notification wiring (host/app/src/notifications.h):
// which notifier instances a build tells, and what the dispatcher's notify
// function does when an instance is not there.
#include "notifications.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln::app {
namespace {

using ::testing::HasSubstr;

config::InstanceConfig instance(const std::string& name, const std::string& plugin,
                                nlohmann::json config) {
  config::InstanceConfig i;
  i.name = name;
  std::string error;
  i.plugin = *domain::parsePluginRef(plugin, &error);
  i.config = std::move(config);
  return i;
}

Runtime runtime() {
  Runtime rt;
  rt.config.instances["hook"] = instance("hook", "notifier/webhook", {{"secret", "whsec_x"}});
  rt.config.instances["hook-fixed"] = instance("hook-fixed", "notifier/webhook",
                                               {{"secret", "whsec_x"}, {"url", "https://a.test/"}});
  rt.config.instances["log"] = instance("log", "notifier/log", nlohmann::json::object());
  config::ProjectConfig demo;
  demo.stages.notifiers = std::vector<std::string>{"hook", "hook-fixed", "log"};
  rt.config.projects["demo"] = demo;
  rt.config.defaults.stages.notifiers = std::vector<std::string>{"log"};
  return rt;
}

TEST(NotificationWiringTest, AWebhookWithoutItsOwnUrlNeedsTheBuildsCallback) {
  const Runtime rt = runtime();
  const auto options = deliveryPlanning(rt);
  domain::Build b;
  b.project_id = "demo";
  const auto bindings = options.notifiers(b);
  ASSERT_EQ(bindings.size(), 3u);
  EXPECT_EQ(bindings[0].instance, "hook");
  EXPECT_TRUE(bindings[0].needs_target);
  EXPECT_EQ(bindings[1].instance, "hook-fixed");
  EXPECT_FALSE(bindings[1].needs_target);
  EXPECT_EQ(bindings[2].instance, "log");
  EXPECT_FALSE(bindings[2].needs_target);
  // A project created through the API gets the defaults' notifiers.
  b.project_id = "from-api";
  const auto defaults = options.notifiers(b);
  ASSERT_EQ(defaults.size(), 1u);
  EXPECT_EQ(defaults[0].instance, "log");
}

TEST(NotificationWiringTest, AMissingInstanceIsAPermanentFailureThatSaysSo) {
  const Runtime rt = runtime();  // no instances were created
  const auto notify = notifyThroughPlugins(rt);
  domain::Delivery d;
  d.notifier = "hook";
  d.payload = R"({"id":"msg_x_hook"})";
  const Result<std::string> r = notify(d, [] { return false; });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(services::NotificationDispatcher::isRetryable(r.error()));
  EXPECT_THAT(r.error().message, HasSubstr("notifier instance \"hook\" is not configured"));
}

}  // namespace
}  // namespace kiln::app
