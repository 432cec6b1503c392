/*
 * Kiln plugin ABI, version 1.
 *
 * This header IS the contract between the Kiln host and plugin libraries.
 * It is plain C11 (and valid C++17/C++20): only fixed-width integers,
 * structs and function pointers cross it; no C++ types, no exceptions, no
 * heap memory owned by the other side.
 *
 * Overview
 *   A plugin library exports exactly one symbol, `kiln_plugin_entry`, a
 *   constant `kiln_library_entry`. The host reads its `struct_size` and ABI
 *   version and refuses the library before calling anything in it unless:
 *     - abi_major == KILN_ABI_VERSION_MAJOR of the host, and
 *     - abi_minor <= the host's KILN_ABI_VERSION_MINOR, and
 *     - struct_size >= KILN_LIBRARY_ENTRY_MIN_SIZE.
 *   Then it calls init() once with the host services table, asks for the
 *   plugin descriptors (one library may provide several plugins, of any
 *   kinds), creates instances from configuration, and calls the
 *   kind-specific function table of each instance.
 *
 * Kinds are versioned factories named by string: "kiln.code-agent/1",
 * "kiln.template-provider/1", "kiln.git-host/1", "kiln.ci-trigger/1",
 * "kiln.notifier/1". A breaking change to a kind's table is a new revision
 * ("/2") beside the old one, never an edit of a released table.
 *
 * Data across the boundary is UTF-8 JSON text: each call gets a request
 * document and answers with a result document through the host's result
 * sink (kiln_host.set_result). The documents of each kind are described
 * next to its table below and in docs/plugin-abi.md.
 *
 * Growth: every struct starts with `uint32_t struct_size` (sizeof as the
 * writer compiled it). Structs only grow at the end. A reader copies at most
 * the bytes it knows and treats members beyond the writer's struct_size as
 * absent (NULL / 0). Members marked OPTIONAL may be NULL even within size.
 *
 * Threads: unless a descriptor sets KILN_PLUGIN_FLAG_SERIALIZED, the host may
 * call the functions of one instance concurrently from several worker
 * threads; different instances are always independent. init/deinit and
 * create/destroy are never called concurrently with anything else in the
 * same library.
 */
#ifndef KILN_PLUGIN_H
#define KILN_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Versions --------------------------------------------------------- */

#define KILN_ABI_VERSION_MAJOR 1
#define KILN_ABI_VERSION_MINOR 0

/* Kind (factory) identifiers, with their revision. */
#define KILN_KIND_CODE_AGENT_V1 "kiln.code-agent/1"
#define KILN_KIND_TEMPLATE_PROVIDER_V1 "kiln.template-provider/1"
#define KILN_KIND_GIT_HOST_V1 "kiln.git-host/1"
#define KILN_KIND_CI_TRIGGER_V1 "kiln.ci-trigger/1"
#define KILN_KIND_NOTIFIER_V1 "kiln.notifier/1"

/* ---- Basic types ------------------------------------------------------ */

/* A UTF-8 string slice; not necessarily NUL-terminated.
 * OWNERSHIP/LIFETIME: always borrowed; documented at each use. */
typedef struct kiln_str {
  const char* data; /* may be NULL when size == 0 */
  size_t size;
} kiln_str;

/* Status codes. 0 is success; everything else is a failure, and a failing
 * plugin function MUST have called kiln_host.set_error first (a failure
 * without a message is reported as a plugin bug). */
typedef int32_t kiln_status;
#define KILN_OK 0
#define KILN_ERR_INVALID_ARGUMENT 1 /* the request or config is wrong; do not retry */
#define KILN_ERR_FAILED 2           /* the work itself failed (agent error, rejected push) */
#define KILN_ERR_UNAVAILABLE 3      /* a dependency is down or unreachable; often retryable */
#define KILN_ERR_CANCELLED 4        /* the host asked to cancel (kiln_host.is_cancelled) */
#define KILN_ERR_TIMEOUT 5          /* a deadline passed */
#define KILN_ERR_NOT_FOUND 6        /* e.g. unknown template, missing repository */
#define KILN_ERR_UNSUPPORTED 7      /* the operation is not provided by this plugin */
#define KILN_ERR_INTERNAL 8         /* a bug; the SDK maps uncaught exceptions here */

/* Log levels for kiln_host.log. */
typedef int32_t kiln_log_level;
#define KILN_LOG_DEBUG 0
#define KILN_LOG_INFO 1
#define KILN_LOG_WARN 2
#define KILN_LOG_ERROR 3

/* Event kinds for kiln_host.emit. */
typedef int32_t kiln_event_kind;
/* A chunk of the work's output (e.g. an agent's stdout), appended verbatim
 * to the build log. Payload: raw UTF-8 text. */
#define KILN_EVENT_OUTPUT 1
/* Progress of the call. Payload: JSON {"message": string, "percent"?: 0..100}. */
#define KILN_EVENT_PROGRESS 2

/* Descriptor flags. */
#define KILN_PLUGIN_FLAG_SERIALIZED 0x1u /* host never calls one instance concurrently */

/* ---- Host services ---------------------------------------------------- */

/* One invocation of a plugin function: create(), or one call of a kind's
 * table. Opaque and host-owned. The request/config kiln_str a function
 * receives is borrowed for the duration of that function only.
 * LIFETIME: valid only until the plugin function it was passed to returns.
 * THREAD: use it only on the thread that received it, except is_cancelled
 * and emit, which may be called from any thread during the call. */
typedef struct kiln_call kiln_call;

/* The services the host offers to plugins, given to init().
 * OWNERSHIP/LIFETIME: host-owned, constant, valid until deinit() returns.
 * All functions are thread-safe. String arguments are borrowed for the
 * duration of the function only. Data the host returns through a kiln_str*
 * out-parameter is host-owned and stays valid until the current call ends. */
typedef struct kiln_host {
  uint32_t struct_size;
  uint32_t abi_major;
  uint32_t abi_minor;
  const char* host_name;    /* "kiln", NUL-terminated */
  const char* host_version; /* e.g. "0.1.0", NUL-terminated */
  void* host_data;          /* host-private; plugins must not touch it */

  /* Writes one line to the host log, tagged with the library and, when
   * `call` is not NULL, the plugin instance and build. Any thread; `host` is
   * the table given to init(); `call` may be NULL outside a call. */
  void (*log)(const struct kiln_host* host, kiln_call* call, kiln_log_level level,
              kiln_str message);

  /* Reports an event of the current call (see KILN_EVENT_*). */
  void (*emit)(kiln_call* call, kiln_event_kind kind, kiln_str payload);

  /* True once the host wants the call to stop (build cancelled or timed
   * out). Long-running plugins poll it and return KILN_ERR_CANCELLED. */
  bool (*is_cancelled)(kiln_call* call);

  /* Records why the call fails. Call it before returning a non-OK status;
   * the last call wins. The status the function returns is what counts;
   * pass the same code here. `retryable` tells the host whether the same
   * call may succeed later (network trouble) or not (bad input). A failed
   * host service (get_secret aside from NOT_FOUND, http_request,
   * run_process) has already recorded its error for the call. */
  void (*set_error)(kiln_call* call, kiln_status code, bool retryable, kiln_str message);

  /* The result sink: hands the call's result document (JSON) to the host,
   * which copies it. Returns KILN_ERR_INVALID_ARGUMENT (and records why) if
   * it is not valid JSON. At most once per call; a second call replaces. */
  kiln_status (*set_result)(kiln_call* call, kiln_str json);

  /* Looks up a secret the operator configured under `secrets:` by name.
   * On KILN_OK, *value is host-owned until the call ends. KILN_ERR_NOT_FOUND
   * if there is no such secret. Never log the value. */
  kiln_status (*get_secret)(kiln_call* call, kiln_str name, kiln_str* value);

  /* Performs an HTTP request through the host's client, which applies
   * timeouts, retries, the outbound-URL policy, metrics and secret
   * redaction. Request JSON:
   *   {"method": "POST", "url": "https://...", "headers": {"k": "v"},
   *    "body": "text", "timeout_ms": 10000, "follow_redirects": false}
   * Response JSON in *response (host-owned until the call ends):
   *   {"status": 200, "headers": {"k": "v"}, "body": "text"}
   * A response with any HTTP status is KILN_OK; transport failures are
   * errors (KILN_ERR_UNAVAILABLE, KILN_ERR_TIMEOUT). A host may answer
   * KILN_ERR_UNAVAILABLE when it does not offer the service. */
  kiln_status (*http_request)(kiln_call* call, kiln_str request_json, kiln_str* response);

  /* Runs a child process (argv, never a shell) through the host's runner,
   * which applies the timeout, cancellation (process-group kill), output
   * streaming to the build log and a scrubbed environment. Request JSON:
   *   {"argv": ["prog", "arg"], "cwd": "/abs/dir", "env": {"K": "V"},
   *    "stdin": "text", "timeout_ms": 600000, "stream_output": true}
   * Result JSON in *result (host-owned until the call ends):
   *   {"exit_code": 0, "signal": 0, "stdout": "...", "stderr": "...",
   *    "timed_out": false, "cancelled": false}
   * A host may answer KILN_ERR_UNAVAILABLE when it does not offer it. */
  kiln_status (*run_process)(kiln_call* call, kiln_str request_json, kiln_str* result);

  /* Looks up an optional, versioned host extension by id ("kiln.foo/1").
   * Returns a host-owned constant table, or NULL if the host lacks it. */
  const void* (*get_extension)(const struct kiln_host* host, const char* id);
} kiln_host;

#define KILN_HOST_MIN_SIZE (offsetof(kiln_host, get_extension) + sizeof(void*))

/* ---- Plugin descriptors ----------------------------------------------- */

/* Describes one plugin a library provides.
 * OWNERSHIP/LIFETIME: plugin-owned; must stay valid and unchanged from the
 * get_plugin() that returned it until deinit() returns. Strings are
 * NUL-terminated UTF-8. */
typedef struct kiln_plugin_descriptor {
  uint32_t struct_size;
  uint32_t flags;            /* KILN_PLUGIN_FLAG_* */
  const char* kind;          /* a KILN_KIND_* id, e.g. "kiln.notifier/1" */
  const char* id;            /* unique per kind: [a-z0-9][a-z0-9_-]*, e.g. "webhook" */
  const char* name;          /* human-readable, e.g. "Webhook notifier" */
  const char* version;       /* the plugin's own semantic version */
  const char* description;   /* OPTIONAL: one or two sentences (`kiln plugins list --json`) */
  const char* config_schema; /* JSON Schema draft-07 of the instance config */

  /* Creates an instance from its configuration (JSON object already
   * validated against config_schema, defaults filled in). On KILN_OK stores
   * the plugin-owned instance in *instance; otherwise calls set_error. */
  kiln_status (*create)(kiln_call* call, kiln_str config_json, void** instance);

  /* Destroys an instance created by create(). Never fails. */
  void (*destroy)(void* instance);

  /* The kind-specific function table, e.g. const kiln_code_agent_v1* for
   * kind "kiln.code-agent/1". Plugin-owned, constant. */
  const void* table;

  /* OPTIONAL: a URL with documentation for users of this plugin. */
  const char* homepage;
} kiln_plugin_descriptor;

/* Descriptors shorter than this are refused; members after it are optional. */
#define KILN_PLUGIN_DESCRIPTOR_MIN_SIZE (offsetof(kiln_plugin_descriptor, table) + sizeof(void*))

/* ---- The library entry ------------------------------------------------ */

/* The one exported symbol of a plugin library:
 *     KILN_EXPORT const kiln_library_entry kiln_plugin_entry = {...};
 * OWNERSHIP/LIFETIME: plugin-owned constant data, valid while loaded.
 * The host reads struct_size, abi_major and abi_minor before anything else. */
typedef struct kiln_library_entry {
  uint32_t struct_size;
  uint32_t abi_major;  /* KILN_ABI_VERSION_MAJOR the library was built with */
  uint32_t abi_minor;  /* KILN_ABI_VERSION_MINOR the library was built with */
  const char* name;    /* OPTIONAL: library name, e.g. "kiln-bundled" */
  const char* version; /* OPTIONAL: library version */

  /* Called once after loading, before any other function. `host` stays
   * valid until deinit() returns. Returns false (after host->log) when the
   * library cannot work; the host then unloads it without calling deinit. */
  bool (*init)(const kiln_host* host);

  /* Called once before unloading, after every instance was destroyed. */
  void (*deinit)(void);

  /* Number of plugins provided, and each descriptor by index. */
  uint32_t (*plugin_count)(void);
  const kiln_plugin_descriptor* (*get_plugin)(uint32_t index);
} kiln_library_entry;

#define KILN_LIBRARY_ENTRY_MIN_SIZE (offsetof(kiln_library_entry, get_plugin) + sizeof(void*))

#define KILN_ENTRY_SYMBOL "kiln_plugin_entry"

#if defined(_WIN32)
#define KILN_EXPORT __declspec(dllexport)
#else
#define KILN_EXPORT __attribute__((visibility("default")))
#endif

/* Every plugin library defines this once (the C++ SDK's KILN_PLUGIN_LIBRARY
 * does it for you). Build with -fvisibility=hidden so that nothing else is
 * exported; kiln_add_plugin() in the CMake package does. */
KILN_EXPORT extern const kiln_library_entry kiln_plugin_entry;

/* ---- Kind: code agent ("kiln.code-agent/1") ----------------------------- */

/* Runs a code agent in a prepared workspace.
 *
 * execute() request:
 *   {"task_id": "…", "project_id": "…", "workspace": "/abs/checkout",
 *    "prompt": "rendered prompt", "branch": "main", "timeout_ms": 600000,
 *    "variables": {"k": "v"}}
 * result:
 *   {"success": true, "output": "summary text", "error": "",
 *    "artifacts": [{"name": "report.md", "path": "relative/or/abs"}],
 *    "metadata": {...}}            (metadata: free-form, kept with the build)
 * An agent that ran but did not accomplish the task answers KILN_OK with
 * "success": false and "error"; a failure to run at all is a non-OK status.
 * The call blocks until the agent finishes; output is streamed with
 * KILN_EVENT_OUTPUT; is_cancelled must be honoured. */
typedef struct kiln_code_agent_v1 {
  uint32_t struct_size;
  kiln_status (*execute)(void* instance, kiln_call* call, kiln_str request_json);
} kiln_code_agent_v1;

/* ---- Kind: template provider ("kiln.template-provider/1") --------------- */

/* Turns a template name and variables into the prompt.
 *
 * render() request:
 *   {"template": "feature", "variables": {"k": "v"},
 *    "builtins": {"project": "…", "repo": "…", "branch": "…", "task_id": "…"}}
 * result: {"prompt": "rendered text"}
 * errors: KILN_ERR_NOT_FOUND for an unknown template,
 *         KILN_ERR_INVALID_ARGUMENT for a missing required variable.
 *
 * list() (OPTIONAL) request: {}
 * result: {"templates": [{"name": "feature", "description": "…",
 *          "variables": [{"name": "k", "required": true, "default": "…",
 *                         "description": "…"}]}]} */
typedef struct kiln_template_provider_v1 {
  uint32_t struct_size;
  kiln_status (*render)(void* instance, kiln_call* call, kiln_str request_json);
  kiln_status (*list)(void* instance, kiln_call* call, kiln_str request_json);
} kiln_template_provider_v1;

/* ---- Kind: git host ("kiln.git-host/1") ---------------------------------- */

/* Knows how to reach repositories of one hosting service.
 *
 * credentials() request: {"url": "https://host/o/r.git",
 *                         "allowed": ["userpass", "ssh_key"]}
 * result, one of:
 *   {"type": "none"}
 *   {"type": "userpass", "username": "x-access-token", "password": "…"}
 *   {"type": "ssh_key", "username": "git", "private_key_path": "/abs",
 *    "public_key_path": "/abs" (optional), "passphrase": "…" (optional)}
 * The host hands these to git only through its credential callback; they
 * are never stored, logged or passed to the agent.
 *
 * create_repository() (OPTIONAL) request:
 *   {"name": "demo", "description": "…", "private": true,
 *    "default_branch": "main"}
 * result: {"repo_url": "clone URL", "web_url": "…" (optional)}
 *
 * open_change_request() (OPTIONAL) request:
 *   {"repo_url": "…", "source_branch": "kiln/…", "target_branch": "main",
 *    "title": "…", "body": "…"}
 * result: {"url": "…", "number": 12} */
typedef struct kiln_git_host_v1 {
  uint32_t struct_size;
  kiln_status (*credentials)(void* instance, kiln_call* call, kiln_str request_json);
  kiln_status (*create_repository)(void* instance, kiln_call* call, kiln_str request_json);
  kiln_status (*open_change_request)(void* instance, kiln_call* call, kiln_str request_json);
} kiln_git_host_v1;

/* ---- Kind: CI trigger ("kiln.ci-trigger/1") ------------------------------ */

/* Starts a CI pipeline for a pushed commit.
 *
 * trigger() request:
 *   {"task_id": "…", "project_id": "…", "repo_url": "…",
 *    "branch": "main", "commit_sha": "…"}
 * result: {"run_id": "…", "url": "…" (optional), "status": "queued"}
 *
 * status() (OPTIONAL) request: {"run_id": "…"}
 * result: {"status": "queued|running|success|failure|cancelled|unknown",
 *          "url": "…" (optional)} */
typedef struct kiln_ci_trigger_v1 {
  uint32_t struct_size;
  kiln_status (*trigger)(void* instance, kiln_call* call, kiln_str request_json);
  kiln_status (*status)(void* instance, kiln_call* call, kiln_str request_json);
} kiln_ci_trigger_v1;

/* ---- Kind: notifier ("kiln.notifier/1") ---------------------------------- */

/* Tells someone that something happened to a build.
 *
 * notify() request:
 *   {"event": {"id": "msg_…" (the same on every attempt of this
 *              notification: receivers dedupe on it),
 *              "type": "build.completed", "timestamp": "RFC 3339",
 *              "data": {"task_id": "…", "project_id": "…",
 *                       "status": "completed", "error_kind": null,
 *                       "result": {BuildResult}}},
 *    "target": "https://callback.example/hook" (optional: the build's
 *              callback_url, when the notifier delivers to one)}
 * result: {"delivered": true, "detail": "HTTP 204" (optional)}
 * A delivery that should be tried again later fails with a retryable error. */
typedef struct kiln_notifier_v1 {
  uint32_t struct_size;
  kiln_status (*notify)(void* instance, kiln_call* call, kiln_str request_json);
} kiln_notifier_v1;

/* Minimum sizes of the kind tables: through their first (required) member. */
#define KILN_CODE_AGENT_V1_MIN_SIZE (offsetof(kiln_code_agent_v1, execute) + sizeof(void*))
#define KILN_TEMPLATE_PROVIDER_V1_MIN_SIZE \
  (offsetof(kiln_template_provider_v1, render) + sizeof(void*))
#define KILN_GIT_HOST_V1_MIN_SIZE (offsetof(kiln_git_host_v1, credentials) + sizeof(void*))
#define KILN_CI_TRIGGER_V1_MIN_SIZE (offsetof(kiln_ci_trigger_v1, trigger) + sizeof(void*))
#define KILN_NOTIFIER_V1_MIN_SIZE (offsetof(kiln_notifier_v1, notify) + sizeof(void*))

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KILN_PLUGIN_H */
