// Snapshot of the layout of every released ABI struct (LP64, as on every
// platform Kiln ships for). A change here breaks every plugin in the wild:
// structs may only grow at the end, and then the new size goes here too.
#include <cstddef>

#include <gtest/gtest.h>

#include "kiln/plugin.h"

namespace {

#define EXPECT_LAYOUT(type, member, offset) \
  EXPECT_EQ(offsetof(type, member), size_t{offset}) << #member

TEST(AbiLayoutTest, VersionIs1_0) {
  EXPECT_EQ(KILN_ABI_VERSION_MAJOR, 1);
  EXPECT_EQ(KILN_ABI_VERSION_MINOR, 0);
  EXPECT_STREQ(KILN_ENTRY_SYMBOL, "kiln_plugin_entry");
  EXPECT_STREQ(KILN_KIND_CODE_AGENT_V1, "kiln.code-agent/1");
  EXPECT_STREQ(KILN_KIND_TEMPLATE_PROVIDER_V1, "kiln.template-provider/1");
  EXPECT_STREQ(KILN_KIND_GIT_HOST_V1, "kiln.git-host/1");
  EXPECT_STREQ(KILN_KIND_CI_TRIGGER_V1, "kiln.ci-trigger/1");
  EXPECT_STREQ(KILN_KIND_NOTIFIER_V1, "kiln.notifier/1");
}

TEST(AbiLayoutTest, StatusAndEventValues) {
  EXPECT_EQ(KILN_OK, 0);
  EXPECT_EQ(KILN_ERR_INVALID_ARGUMENT, 1);
  EXPECT_EQ(KILN_ERR_FAILED, 2);
  EXPECT_EQ(KILN_ERR_UNAVAILABLE, 3);
  EXPECT_EQ(KILN_ERR_CANCELLED, 4);
  EXPECT_EQ(KILN_ERR_TIMEOUT, 5);
  EXPECT_EQ(KILN_ERR_NOT_FOUND, 6);
  EXPECT_EQ(KILN_ERR_UNSUPPORTED, 7);
  EXPECT_EQ(KILN_ERR_INTERNAL, 8);
  EXPECT_EQ(KILN_LOG_DEBUG, 0);
  EXPECT_EQ(KILN_LOG_ERROR, 3);
  EXPECT_EQ(KILN_EVENT_OUTPUT, 1);
  EXPECT_EQ(KILN_EVENT_PROGRESS, 2);
  EXPECT_EQ(KILN_PLUGIN_FLAG_SERIALIZED, 1u);
}

TEST(AbiLayoutTest, Str) {
  EXPECT_EQ(sizeof(kiln_str), 16u);
  EXPECT_LAYOUT(kiln_str, data, 0);
  EXPECT_LAYOUT(kiln_str, size, 8);
}

TEST(AbiLayoutTest, LibraryEntry) {
  EXPECT_EQ(sizeof(kiln_library_entry), 64u);
  EXPECT_LAYOUT(kiln_library_entry, struct_size, 0);
  EXPECT_LAYOUT(kiln_library_entry, abi_major, 4);
  EXPECT_LAYOUT(kiln_library_entry, abi_minor, 8);
  EXPECT_LAYOUT(kiln_library_entry, name, 16);
  EXPECT_LAYOUT(kiln_library_entry, version, 24);
  EXPECT_LAYOUT(kiln_library_entry, init, 32);
  EXPECT_LAYOUT(kiln_library_entry, deinit, 40);
  EXPECT_LAYOUT(kiln_library_entry, plugin_count, 48);
  EXPECT_LAYOUT(kiln_library_entry, get_plugin, 56);
  EXPECT_EQ(KILN_LIBRARY_ENTRY_MIN_SIZE, 64u);
}

TEST(AbiLayoutTest, Host) {
  EXPECT_EQ(sizeof(kiln_host), 112u);
  EXPECT_LAYOUT(kiln_host, struct_size, 0);
  EXPECT_LAYOUT(kiln_host, abi_major, 4);
  EXPECT_LAYOUT(kiln_host, abi_minor, 8);
  EXPECT_LAYOUT(kiln_host, host_name, 16);
  EXPECT_LAYOUT(kiln_host, host_version, 24);
  EXPECT_LAYOUT(kiln_host, host_data, 32);
  EXPECT_LAYOUT(kiln_host, log, 40);
  EXPECT_LAYOUT(kiln_host, emit, 48);
  EXPECT_LAYOUT(kiln_host, is_cancelled, 56);
  EXPECT_LAYOUT(kiln_host, set_error, 64);
  EXPECT_LAYOUT(kiln_host, set_result, 72);
  EXPECT_LAYOUT(kiln_host, get_secret, 80);
  EXPECT_LAYOUT(kiln_host, http_request, 88);
  EXPECT_LAYOUT(kiln_host, run_process, 96);
  EXPECT_LAYOUT(kiln_host, get_extension, 104);
  EXPECT_EQ(KILN_HOST_MIN_SIZE, 112u);
}

TEST(AbiLayoutTest, PluginDescriptor) {
  EXPECT_EQ(sizeof(kiln_plugin_descriptor), 88u);
  EXPECT_LAYOUT(kiln_plugin_descriptor, struct_size, 0);
  EXPECT_LAYOUT(kiln_plugin_descriptor, flags, 4);
  EXPECT_LAYOUT(kiln_plugin_descriptor, kind, 8);
  EXPECT_LAYOUT(kiln_plugin_descriptor, id, 16);
  EXPECT_LAYOUT(kiln_plugin_descriptor, name, 24);
  EXPECT_LAYOUT(kiln_plugin_descriptor, version, 32);
  EXPECT_LAYOUT(kiln_plugin_descriptor, description, 40);
  EXPECT_LAYOUT(kiln_plugin_descriptor, config_schema, 48);
  EXPECT_LAYOUT(kiln_plugin_descriptor, create, 56);
  EXPECT_LAYOUT(kiln_plugin_descriptor, destroy, 64);
  EXPECT_LAYOUT(kiln_plugin_descriptor, table, 72);
  EXPECT_LAYOUT(kiln_plugin_descriptor, homepage, 80);
  EXPECT_EQ(KILN_PLUGIN_DESCRIPTOR_MIN_SIZE, 80u);
}

TEST(AbiLayoutTest, KindTables) {
  EXPECT_EQ(sizeof(kiln_code_agent_v1), 16u);
  EXPECT_LAYOUT(kiln_code_agent_v1, execute, 8);
  EXPECT_EQ(KILN_CODE_AGENT_V1_MIN_SIZE, 16u);

  EXPECT_EQ(sizeof(kiln_template_provider_v1), 24u);
  EXPECT_LAYOUT(kiln_template_provider_v1, render, 8);
  EXPECT_LAYOUT(kiln_template_provider_v1, list, 16);
  EXPECT_EQ(KILN_TEMPLATE_PROVIDER_V1_MIN_SIZE, 16u);

  EXPECT_EQ(sizeof(kiln_git_host_v1), 32u);
  EXPECT_LAYOUT(kiln_git_host_v1, credentials, 8);
  EXPECT_LAYOUT(kiln_git_host_v1, create_repository, 16);
  EXPECT_LAYOUT(kiln_git_host_v1, open_change_request, 24);
  EXPECT_EQ(KILN_GIT_HOST_V1_MIN_SIZE, 16u);

  EXPECT_EQ(sizeof(kiln_ci_trigger_v1), 24u);
  EXPECT_LAYOUT(kiln_ci_trigger_v1, trigger, 8);
  EXPECT_LAYOUT(kiln_ci_trigger_v1, status, 16);
  EXPECT_EQ(KILN_CI_TRIGGER_V1_MIN_SIZE, 16u);

  EXPECT_EQ(sizeof(kiln_notifier_v1), 16u);
  EXPECT_LAYOUT(kiln_notifier_v1, notify, 8);
  EXPECT_EQ(KILN_NOTIFIER_V1_MIN_SIZE, 16u);
}

}  // namespace
