#include "kiln/plugins/registry.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <regex>

#include <boost/dll/shared_library.hpp>

#include "abi_bridge.h"
#include "kiln/config/json_schema.h"

namespace kiln::plugins {
namespace fs = std::filesystem;

namespace {

std::string abiText(uint32_t major, uint32_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

// Copies the first min(struct_size, sizeof(T)) bytes of a plugin struct into
// a zeroed host copy: members the plugin did not have read as NULL / 0.
template <class T>
T copyPrefix(const void* src, uint32_t struct_size) {
  T out{};
  std::memcpy(static_cast<void*>(&out), src, std::min<size_t>(struct_size, sizeof(T)));
  return out;
}

struct KindSpec {
  const char* id;
  domain::PluginKind kind;
  size_t host_size;
  size_t min_size;
};

const KindSpec kKinds[] = {
    {KILN_KIND_CODE_AGENT_V1, domain::PluginKind::kCodeAgent, sizeof(kiln_code_agent_v1),
     KILN_CODE_AGENT_V1_MIN_SIZE},
    {KILN_KIND_TEMPLATE_PROVIDER_V1, domain::PluginKind::kTemplateProvider,
     sizeof(kiln_template_provider_v1), KILN_TEMPLATE_PROVIDER_V1_MIN_SIZE},
    {KILN_KIND_GIT_HOST_V1, domain::PluginKind::kGitHost, sizeof(kiln_git_host_v1),
     KILN_GIT_HOST_V1_MIN_SIZE},
    {KILN_KIND_CI_TRIGGER_V1, domain::PluginKind::kCiTrigger, sizeof(kiln_ci_trigger_v1),
     KILN_CI_TRIGGER_V1_MIN_SIZE},
    {KILN_KIND_NOTIFIER_V1, domain::PluginKind::kNotifier, sizeof(kiln_notifier_v1),
     KILN_NOTIFIER_V1_MIN_SIZE},
};

const KindSpec* findKind(std::string_view id) {
  for (const KindSpec& k : kKinds) {
    if (id == k.id) return &k;
  }
  return nullptr;
}

std::string knownKinds() {
  std::string out;
  for (const KindSpec& k : kKinds) out += (out.empty() ? "" : ", ") + std::string(k.id);
  return out;
}

// Which function of which table an operation calls; NULL when absent.
using TableFn = kiln_status (*)(void*, kiln_call*, kiln_str);
TableFn tableFunction(const void* table, Operation op) {
  switch (op) {
    case Operation::kExecute: return static_cast<const kiln_code_agent_v1*>(table)->execute;
    case Operation::kRender: return static_cast<const kiln_template_provider_v1*>(table)->render;
    case Operation::kList: return static_cast<const kiln_template_provider_v1*>(table)->list;
    case Operation::kCredentials: return static_cast<const kiln_git_host_v1*>(table)->credentials;
    case Operation::kCreateRepository:
      return static_cast<const kiln_git_host_v1*>(table)->create_repository;
    case Operation::kOpenChangeRequest:
      return static_cast<const kiln_git_host_v1*>(table)->open_change_request;
    case Operation::kTrigger: return static_cast<const kiln_ci_trigger_v1*>(table)->trigger;
    case Operation::kStatus: return static_cast<const kiln_ci_trigger_v1*>(table)->status;
    case Operation::kNotify: return static_cast<const kiln_notifier_v1*>(table)->notify;
  }
  return nullptr;
}

ErrorCode errorCodeOf(kiln_status status) {
  switch (status) {
    case KILN_ERR_INVALID_ARGUMENT: return ErrorCode::kInvalidArgument;
    case KILN_ERR_FAILED: return ErrorCode::kFailed;
    case KILN_ERR_UNAVAILABLE: return ErrorCode::kUnavailable;
    case KILN_ERR_CANCELLED: return ErrorCode::kCancelled;
    case KILN_ERR_TIMEOUT: return ErrorCode::kTimeout;
    case KILN_ERR_NOT_FOUND: return ErrorCode::kNotFound;
    case KILN_ERR_UNSUPPORTED: return ErrorCode::kUnsupported;
    default: return ErrorCode::kInternal;
  }
}

// Turns the outcome of a plugin call into a Result, enforcing the contract.
Result<void> checkOutcome(const kiln_call& call, kiln_status status, const char* function) {
  const std::string who = describeCallee(call);
  if (!call.invalid_result.empty()) {
    return makeError(ErrorCode::kPluginBug,
                     who + ": " + function + "(): " + call.invalid_result + " (a plugin bug)");
  }
  if (status == KILN_OK) return {};
  if (status < KILN_ERR_INVALID_ARGUMENT || status > KILN_ERR_INTERNAL) {
    return makeError(ErrorCode::kPluginBug, who + ": " + function + "() returned unknown status " +
                                                std::to_string(status) + " (a plugin bug)");
  }
  if (!call.error_set || call.error_message.empty()) {
    return makeError(ErrorCode::kPluginBug, who + ": " + function + "() failed with status " +
                                                std::to_string(status) +
                                                " without an error message (a plugin bug)");
  }
  return makeError(errorCodeOf(status), who + ": " + call.error_message, call.error_retryable);
}

}  // namespace

// ---- LoadedLibrary ---------------------------------------------------------

LoadedLibrary::LoadedLibrary(std::string path, boost::dll::shared_library lib,
                             std::shared_ptr<const HostServices> services)
    : path_(std::move(path)), lib_(std::move(lib)), services_(std::move(services)) {
  fillHostTable(&host_, this);
}

LoadedLibrary::~LoadedLibrary() {
  if (initialized && entry.deinit != nullptr) entry.deinit();
}

void LoadedLibrary::log(LogLevel level, const std::string& line) const {
  if (services_->log) {
    services_->log(level, line);
    return;
  }
  static const char* kNames[] = {"debug", "info", "warn", "error"};
  std::cerr << kNames[static_cast<int>(level)] << ": " << line << "\n";
}

// ---- Operations -------------------------------------------------------------

const char* operationName(Operation op) {
  switch (op) {
    case Operation::kExecute: return "execute";
    case Operation::kRender: return "render";
    case Operation::kList: return "list";
    case Operation::kCredentials: return "credentials";
    case Operation::kCreateRepository: return "create_repository";
    case Operation::kOpenChangeRequest: return "open_change_request";
    case Operation::kTrigger: return "trigger";
    case Operation::kStatus: return "status";
    case Operation::kNotify: return "notify";
  }
  return "?";
}

domain::PluginKind operationKind(Operation op) {
  switch (op) {
    case Operation::kExecute: return domain::PluginKind::kCodeAgent;
    case Operation::kRender:
    case Operation::kList: return domain::PluginKind::kTemplateProvider;
    case Operation::kCredentials:
    case Operation::kCreateRepository:
    case Operation::kOpenChangeRequest: return domain::PluginKind::kGitHost;
    case Operation::kTrigger:
    case Operation::kStatus: return domain::PluginKind::kCiTrigger;
    case Operation::kNotify: return domain::PluginKind::kNotifier;
  }
  return domain::PluginKind::kCodeAgent;
}

// ---- PluginInstance ---------------------------------------------------------

PluginInstance::~PluginInstance() {
  const auto* d = static_cast<const kiln_plugin_descriptor*>(descriptor_);
  if (d != nullptr && handle_ != nullptr) d->destroy(handle_);
}

bool PluginInstance::supports(Operation op) const {
  const auto* d = static_cast<const kiln_plugin_descriptor*>(descriptor_);
  return operationKind(op) == info_->ref.kind && tableFunction(d->table, op) != nullptr;
}

Result<std::string> PluginInstance::invoke(Operation op, const std::string& request_json,
                                           const CallOptions& options) const {
  const auto* d = static_cast<const kiln_plugin_descriptor*>(descriptor_);
  const std::string who = "instance \"" + name_ + "\" (" + info_->ref.str() + ")";
  if (operationKind(op) != info_->ref.kind) {
    return makeError(ErrorCode::kInternal, who + " is a " +
                                               std::string(pluginKindName(info_->ref.kind)) +
                                               ", it has no " + operationName(op) + "()");
  }
  const TableFn fn = tableFunction(d->table, op);
  if (fn == nullptr) {
    return makeError(ErrorCode::kUnsupported,
                     who + " does not support " + operationName(op) + "()");
  }
  kiln_call call;
  call.library = library_.get();
  call.instance_name = &name_;
  call.options = &options;
  call.plugin = info_.get();

  std::unique_lock<std::mutex> lock(serialize_mu_, std::defer_lock);
  if ((info_->flags & KILN_PLUGIN_FLAG_SERIALIZED) != 0) lock.lock();
  const kiln_status status = fn(handle_, &call, kiln_str{request_json.data(), request_json.size()});
  if (lock.owns_lock()) lock.unlock();

  if (auto checked = checkOutcome(call, status, operationName(op)); !checked.ok()) {
    return checked.error();
  }
  if (!call.result) {
    return makeError(ErrorCode::kPluginBug, describeCallee(call) + ": " + operationName(op) +
                                                "() succeeded without a result (a plugin bug)");
  }
  return std::move(*call.result);
}

// ---- Registry ---------------------------------------------------------------

Registry::Registry(HostServices services)
    : services_(std::make_shared<const HostServices>(std::move(services))) {}

Registry::~Registry() = default;

void Registry::loadDirectory(const std::string& dir, std::vector<LoadError>* errors) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    errors->push_back({dir, "plugin directory does not exist or is not a directory"});
    return;
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".so" && e.is_regular_file()) files.push_back(e.path());
  }
  if (ec) errors->push_back({dir, "cannot list plugin directory: " + ec.message()});
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    if (auto r = loadFile(f.string()); !r.ok()) errors->push_back({f.string(), r.error().message});
  }
}

Result<void> Registry::loadFile(const std::string& path_in) {
  std::error_code ec;
  const std::string path = fs::absolute(path_in, ec).lexically_normal().string();
  auto fail = [&](std::string message) { return makeError(ErrorCode::kInvalidArgument, message); };

  boost::dll::shared_library lib;
  try {
    // rtld_now: unresolved symbols fail here, with the loader's message,
    // rather than at the first call.
    lib.load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    return fail(std::string("not a loadable shared library: ") + e.what());
  }
  if (!lib.has(KILN_ENTRY_SYMBOL)) {
    return fail("missing the entry symbol \"" KILN_ENTRY_SYMBOL
                "\": not a Kiln plugin (define it with KILN_PLUGIN_LIBRARY or export it "
                "with KILN_EXPORT)");
  }
  const auto* raw = &lib.get<const kiln_library_entry>(KILN_ENTRY_SYMBOL);
  uint32_t header[3];
  std::memcpy(header, raw, sizeof(header));
  const uint32_t size = header[0], major = header[1], minor = header[2];
  const std::string theirs = abiText(major, minor);
  const std::string ours = abiText(KILN_ABI_VERSION_MAJOR, KILN_ABI_VERSION_MINOR);
  if (size < sizeof(header)) {
    return fail("entry symbol is " + std::to_string(size) +
                " bytes: corrupt or not a Kiln plugin library");
  }
  if (major != KILN_ABI_VERSION_MAJOR) {
    return fail("built for plugin ABI " + theirs + ", but this kiln speaks ABI " + ours +
                " and major versions must match: rebuild the plugin against KilnPluginApi " +
                std::to_string(KILN_ABI_VERSION_MAJOR) + ".x");
  }
  if (minor > KILN_ABI_VERSION_MINOR) {
    return fail("built for plugin ABI " + theirs + ", newer than this kiln's ABI " + ours +
                ": upgrade kiln, or build the plugin against KilnPluginApi " + ours);
  }
  if (size < KILN_LIBRARY_ENTRY_MIN_SIZE) {
    return fail("entry is " + std::to_string(size) + " bytes, less than the " +
                std::to_string(KILN_LIBRARY_ENTRY_MIN_SIZE) + " every ABI " +
                std::to_string(KILN_ABI_VERSION_MAJOR) + ".x library provides");
  }

  auto loaded = std::make_shared<LoadedLibrary>(path, std::move(lib), services_);
  kiln_library_entry& entry = loaded->entry;
  entry = copyPrefix<kiln_library_entry>(raw, size);
  for (auto [fn, name] : {std::pair<const void*, const char*>{(const void*)entry.init, "init"},
                          {(const void*)entry.deinit, "deinit"},
                          {(const void*)entry.plugin_count, "plugin_count"},
                          {(const void*)entry.get_plugin, "get_plugin"}}) {
    if (fn == nullptr) return fail(std::string("entry has no ") + name + "() function");
  }
  if (!entry.init(loaded->host())) {
    return fail("init() refused to start (see the plugin's log lines above)");
  }
  loaded->initialized = true;

  std::vector<Entry> found;
  std::vector<std::string> problems;
  const uint32_t count = entry.plugin_count();
  if (count == 0) problems.push_back("the library provides no plugins");
  for (uint32_t i = 0; i < count; ++i) {
    const kiln_plugin_descriptor* d = entry.get_plugin(i);
    const std::string at = "plugin #" + std::to_string(i);
    if (d == nullptr) {
      problems.push_back(at + ": get_plugin() returned NULL");
      continue;
    }
    if (d->struct_size < KILN_PLUGIN_DESCRIPTOR_MIN_SIZE) {
      problems.push_back(at + ": descriptor is " + std::to_string(d->struct_size) +
                         " bytes, less than the minimum " +
                         std::to_string(KILN_PLUGIN_DESCRIPTOR_MIN_SIZE));
      continue;
    }
    loaded->descriptors.push_back(copyPrefix<kiln_plugin_descriptor>(d, d->struct_size));
    const kiln_plugin_descriptor& desc = loaded->descriptors.back();
    if (desc.id == nullptr || desc.kind == nullptr || desc.name == nullptr ||
        desc.version == nullptr || desc.create == nullptr || desc.destroy == nullptr ||
        desc.table == nullptr) {
      problems.push_back(at +
                         ": descriptor lacks one of kind, id, name, version, create, "
                         "destroy, table");
      continue;
    }
    const std::string id = desc.id;
    static const std::regex kIdPattern("[a-z0-9][a-z0-9_-]*");
    if (!std::regex_match(id, kIdPattern)) {
      problems.push_back(at + ": id \"" + id + "\" must match [a-z0-9][a-z0-9_-]*");
      continue;
    }
    const KindSpec* kind = findKind(desc.kind);
    if (kind == nullptr) {
      problems.push_back("plugin \"" + id + "\" has unknown kind \"" + desc.kind +
                         "\" (this kiln knows: " + knownKinds() + ")");
      continue;
    }
    const uint32_t table_size = *static_cast<const uint32_t*>(desc.table);
    if (table_size < kind->min_size) {
      problems.push_back("plugin \"" + id + "\": its " + kind->id + " table is " +
                         std::to_string(table_size) + " bytes, less than the minimum " +
                         std::to_string(kind->min_size));
      continue;
    }
    std::vector<unsigned char> table(kind->host_size, 0);
    std::memcpy(table.data(), desc.table, std::min<size_t>(table_size, kind->host_size));
    // Every v1 table's first function (right after struct_size) is required.
    static_assert(
        offsetof(kiln_notifier_v1, notify) == offsetof(kiln_code_agent_v1, execute) &&
        offsetof(kiln_ci_trigger_v1, trigger) == offsetof(kiln_code_agent_v1, execute) &&
        offsetof(kiln_git_host_v1, credentials) == offsetof(kiln_code_agent_v1, execute) &&
        offsetof(kiln_template_provider_v1, render) == offsetof(kiln_code_agent_v1, execute));
    void* first_function = nullptr;
    std::memcpy(&first_function, table.data() + offsetof(kiln_code_agent_v1, execute),
                sizeof(void*));
    if (first_function == nullptr) {
      problems.push_back("plugin \"" + id + "\": its " + kind->id +
                         " table lacks the required first function");
      continue;
    }
    loaded->tables.push_back(std::move(table));
    loaded->descriptors.back().table = loaded->tables.back().data();

    auto info = std::make_shared<PluginInfo>();
    info->ref = domain::PluginRef{kind->kind, id};
    info->kind_id = desc.kind;
    info->name = desc.name;
    info->version = desc.version;
    info->description = desc.description != nullptr ? desc.description : "";
    info->homepage = desc.homepage != nullptr ? desc.homepage : "";
    info->flags = desc.flags;
    info->file = path;
    info->library_name = entry.name != nullptr ? entry.name : "";
    info->library_version = entry.version != nullptr ? entry.version : "";
    info->abi_major = major;
    info->abi_minor = minor;
    const char* schema_text = desc.config_schema != nullptr ? desc.config_schema : "{}";
    info->config_schema = nlohmann::json::parse(schema_text, nullptr, false);
    if (info->config_schema.is_discarded()) {
      problems.push_back("plugin " + info->ref.str() + ": config_schema is not valid JSON");
      continue;
    }
    std::string schema_error;
    const auto schema = config::JsonSchema::compile(info->config_schema, &schema_error);
    if (!schema) {
      problems.push_back("plugin " + info->ref.str() +
                         ": config_schema is not a usable JSON Schema: " + schema_error);
      continue;
    }
    if (!schema->ignoredKeywords().empty()) {
      std::string names;
      for (const auto& k : schema->ignoredKeywords()) names += (names.empty() ? "" : ", ") + k;
      loaded->log(LogLevel::kWarn, path + ": plugin " + info->ref.str() +
                                       ": config_schema keywords kiln does not check: " + names);
    }
    const bool dup_here = std::any_of(found.begin(), found.end(),
                                      [&](const Entry& e) { return e.info->ref == info->ref; });
    if (dup_here) {
      problems.push_back("plugin " + info->ref.str() + " is provided twice by this library");
      continue;
    }
    if (auto it = plugins_.find(info->ref); it != plugins_.end()) {
      problems.push_back("duplicate plugin " + info->ref.str() + ": already provided by " +
                         it->second.info->file + ", now also by " + path);
      continue;
    }
    found.push_back(
        Entry{info, loaded, &desc, std::make_shared<const config::JsonSchema>(*schema)});
  }
  if (!problems.empty()) {
    std::string message = problems.front();
    for (size_t i = 1; i < problems.size(); ++i) message += "; " + problems[i];
    return fail(message);
  }
  for (Entry& e : found) plugins_.emplace(e.info->ref, std::move(e));
  return {};
}

const PluginInfo* Registry::find(const domain::PluginRef& ref) const {
  const auto it = plugins_.find(ref);
  return it == plugins_.end() ? nullptr : it->second.info.get();
}

std::vector<const PluginInfo*> Registry::list() const {
  std::vector<const PluginInfo*> out;
  for (const auto& [ref, e] : plugins_) out.push_back(e.info.get());
  return out;
}

std::vector<domain::PluginRef> Registry::refs() const {
  std::vector<domain::PluginRef> out;
  for (const auto& [ref, e] : plugins_) out.push_back(ref);
  return out;
}

Result<std::shared_ptr<PluginInstance>> Registry::create(const domain::PluginRef& ref,
                                                         const std::string& instance_name,
                                                         const nlohmann::json& config) const {
  const auto it = plugins_.find(ref);
  if (it == plugins_.end()) {
    return makeError(ErrorCode::kNotFound,
                     "instance \"" + instance_name + "\": no plugin " + ref.str() + " is loaded");
  }
  const Entry& e = it->second;
  const std::string who =
      "instance \"" + instance_name + "\" (" + ref.str() + " from " + e.info->file + ")";
  const auto& schema = e.schema;
  const auto violations = schema->validate(config);
  if (!violations.empty()) {
    std::string message = who + ": config rejected by the plugin's schema: ";
    for (size_t i = 0; i < violations.size(); ++i) {
      const auto& v = violations[i];
      message += (i ? "; " : "") + (v.instance_path.empty() ? "(root)" : v.instance_path) + ": " +
                 v.message;
    }
    return makeError(ErrorCode::kInvalidArgument, message);
  }
  const std::string config_text = schema->withDefaults(config).dump();

  std::shared_ptr<PluginInstance> instance(new PluginInstance());
  instance->library_ = e.library;
  instance->info_ = e.info;
  instance->descriptor_ = e.descriptor;
  instance->name_ = instance_name;

  kiln_call call;
  call.library = e.library.get();
  call.instance_name = &instance->name_;
  static const CallOptions kNoOptions;
  call.options = &kNoOptions;
  call.plugin = e.info.get();
  const auto* d = static_cast<const kiln_plugin_descriptor*>(e.descriptor);
  void* handle = nullptr;
  const kiln_status status =
      d->create(&call, kiln_str{config_text.data(), config_text.size()}, &handle);
  if (auto checked = checkOutcome(call, status, "create"); !checked.ok()) {
    if (handle != nullptr) d->destroy(handle);
    return checked.error();
  }
  if (handle == nullptr) {
    return makeError(ErrorCode::kPluginBug,
                     who + ": create() succeeded without an instance (a plugin bug)");
  }
  instance->handle_ = handle;
  return instance;
}

}  // namespace kiln::plugins
