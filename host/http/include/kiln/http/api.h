// The build API of the seeds: projects, builds, cancel, retry,
// create-and-build; problem+json errors; Idempotency-Key on every POST.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "kiln/domain/result.h"
#include "kiln/http/server.h"
#include "kiln/services/build_service.h"

namespace kiln::http {

// Adds every build-API route to `router`.
void addBuildApi(Router& router, services::BuildService& service);

// GET /builds/{task_id}/log (the full build log, text/plain) and
// GET /builds/{task_id}/artifacts/{name}; the functions say where the
// executor keeps them.
void addBuildFilesApi(Router& router, ports::Store& store,
                      std::function<std::string(const std::string& task_id)> log_path,
                      std::function<std::string(const std::string& task_id)> artifact_dir);

// GET /builds/{task_id}/deliveries: the build's notifications with every
// attempt ({"deliveries": [codec::toJson(Delivery)...]}); 404 for an unknown
// build.
void addDeliveryApi(Router& router, ports::Store& store);

// The one place where an Error becomes an HTTP problem.
Response problemFor(const Error& error);

// Wraps a POST handler with Idempotency-Key handling (draft-ietf-httpapi-
// idempotency-key-header): the same key and body replay the first answer;
// a different body is 422; a first request still in progress is 409.
Handler idempotent(ports::Store& store, Handler handler);

}  // namespace kiln::http
