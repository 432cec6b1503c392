// The real kiln_host services: run_process through kiln::process and
// http_request through kiln::http, translating the ABI's JSON documents
// (kiln/plugin.h, docs/plugin-abi.md §6). boot() and the tests build the
// services here, so that tests run plugins against what `kiln serve` offers.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "kiln/config/config.h"
#include "kiln/plugins/registry.h"

namespace kiln::app {

struct ProcessServiceOptions {
  // Variables copied from kiln's own environment (as it is when the handler
  // is made) into every child's; the request's "env" is added on top.
  // Nothing else of kiln's environment reaches a child.
  std::vector<std::string> env_allow_list = defaultEnvAllowList();
  std::chrono::milliseconds max_timeout{std::chrono::hours(24)};
  std::chrono::milliseconds kill_grace{2000};   // SIGTERM to SIGKILL
  size_t max_captured_bytes = size_t{1} << 20;  // per stream, in the answer

  static std::vector<std::string> defaultEnvAllowList();
};

// kiln_host.run_process. Request:
//   {"argv": [..] (required), "cwd": "/abs" (optional), "env": {..},
//    "stdin": "text" (absent or null: /dev/null), "timeout_ms": 600000,
//    "stream_output": true (each chunk to CallOptions.on_event as
//    KILN_EVENT_OUTPUT)}
// Answer: {"exit_code", "signal", "stdout", "stderr", "timed_out",
//          "cancelled", "truncated", "duration_ms"}.
// A bad request is kInvalidArgument naming the field; a program that cannot
// be started is kInvalidArgument "cannot run <argv0>: <reason>".
plugins::HostServices::Handler makeRunProcessHandler(ProcessServiceOptions options = {});

// kiln_host.http_request. Request: {"method": "GET", "url" (required),
// "headers": {..}, "body": "text", "timeout_ms": 30000,
// "follow_redirects": false}. Answer: {"status", "headers", "body"}.
plugins::HostServices::Handler makeHttpRequestHandler();

// Both handlers and the configuration's secrets.
plugins::HostServices makeHostServices(const config::Config& config);

}  // namespace kiln::app
