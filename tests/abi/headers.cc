// Compiled by ctest as C++17 and C++20 with -pedantic -Werror: the ABI
// header, the SDK and its FakeHost must be clean in both.
#include "kiln/plugin.h"
#include "kiln/sdk.hpp"
#include "kiln/sdk/testing.hpp"

size_t kilnAbiHeaderProbe();
size_t kilnAbiHeaderProbe() {
  return sizeof(kiln::sdk::PluginInfo) + sizeof(kiln_host);
}
