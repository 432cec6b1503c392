// The `kiln` command line: subcommands, their options and help texts.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace kiln::app {

// Runs `kiln <args>`; returns the process exit code. Output goes to `out`,
// errors and diagnostics to `err`.
int runCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace kiln::app
