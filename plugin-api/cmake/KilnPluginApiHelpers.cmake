# kiln_add_plugin(<name> <sources>...
#                 [LINK_LIBRARIES <libs>...]
#                 [OUTPUT_DIRECTORY <dir>] [INSTALL_DESTINATION <dir>])
#
# Builds a Kiln plugin: a MODULE library named <name>.so that exports only
# `kiln_plugin_entry` (hidden visibility + a version script) and links
# with -z defs, so a missing dependency fails the build instead of the load.
include_guard(GLOBAL)

function(kiln_add_plugin name)
  cmake_parse_arguments(P "" "OUTPUT_DIRECTORY;INSTALL_DESTINATION" "LINK_LIBRARIES" ${ARGN})
  if(NOT P_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "kiln_add_plugin(${name}): no source files given")
  endif()
  set(_KILN_PLUGIN_VERSION_SCRIPT "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/kiln-plugin.map")
  add_library(${name} MODULE ${P_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PRIVATE KilnPluginApi::headers ${P_LINK_LIBRARIES})
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LINK_DEPENDS "${_KILN_PLUGIN_VERSION_SCRIPT}")
  target_link_options(${name} PRIVATE
    "LINKER:--version-script=${_KILN_PLUGIN_VERSION_SCRIPT}" "LINKER:-z,defs")
  if(P_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${P_OUTPUT_DIRECTORY}")
  endif()
  if(P_INSTALL_DESTINATION)
    install(TARGETS ${name} LIBRARY DESTINATION "${P_INSTALL_DESTINATION}")
  endif()
endfunction()
