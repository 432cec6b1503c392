// The build API of the seeds: projects, builds, cancel, retry,
// create-and-build; problem+json errors; Idempotency-Key on every POST.
#pragma once

#include <memory>
#include <string>

#include "kiln/domain/result.h"
#include "kiln/http/server.h"
#include "kiln/services/build_service.h"

namespace kiln::http {

// Adds every build-API route to `router`.
void addBuildApi(Router& router, services::BuildService& service);

// The one place where an Error becomes an HTTP problem.
Response problemFor(const Error& error);

// Wraps a POST handler with Idempotency-Key handling (draft-ietf-httpapi-
// idempotency-key-header): the same key and body replay the first answer;
// a different body is 422; a first request still in progress is 409.
Handler idempotent(ports::Store& store, Handler handler);

}  // namespace kiln::http
