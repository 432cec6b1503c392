/* Compiled by ctest as strict C11 (-pedantic -Werror): the ABI header must be
 * plain C. */
#include "kiln/plugin.h"

/* Use a few declarations so that nothing is optimised into meaninglessness. */
size_t kiln_abi_header_probe(void);
size_t kiln_abi_header_probe(void) {
  return sizeof(kiln_library_entry) + sizeof(kiln_host) + sizeof(kiln_plugin_descriptor) +
         KILN_PLUGIN_DESCRIPTOR_MIN_SIZE + KILN_HOST_MIN_SIZE;
}
