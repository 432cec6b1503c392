// code-agent/command: runs any command-line code agent (Claude Code, Aider,
// Codex CLI, a script) as a child process in the build's workspace, through
// the host's process runner (kiln_host.run_process): argv, never a shell; a
// scrubbed environment; the host's time limit and process-group kill;
// output streamed to the build log.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/sdk.hpp"

namespace {

namespace fs = std::filesystem;
using kiln::sdk::Call;
using kiln::sdk::Error;
using nlohmann::json;

constexpr int64_t kDefaultTimeoutMs = 600000;
constexpr int64_t kMaxTimeoutMs = 24LL * 3600 * 1000;  // what the host's runner accepts
constexpr size_t kErrorTailLines = 20;
constexpr size_t kErrorTailBytes = 4000;

enum class PromptVia { kStdin, kArg, kFile };
enum class OutputFormat { kText, kClaudeJson };

// A relative path that stays inside the directory it is joined to.
bool isContainedRelative(const fs::path& p) {
  if (p.empty() || p.is_absolute()) return false;
  const fs::path n = p.lexically_normal();
  return !n.empty() && *n.begin() != ".." && n != ".";
}

// Replaces {name} placeholders in one pass (a prompt that contains
// "{workspace}" is not expanded again).
std::string substitute(const std::string& in, const std::map<std::string, std::string>& values,
                       bool* used_prompt) {
  std::string out;
  size_t i = 0;
  while (i < in.size()) {
    if (in[i] == '{') {
      const size_t close = in.find('}', i + 1);
      if (close != std::string::npos) {
        const auto it = values.find(in.substr(i + 1, close - i - 1));
        if (it != values.end()) {
          if (it->first == "prompt") *used_prompt = true;
          out += it->second;
          i = close + 1;
          continue;
        }
      }
    }
    out += in[i++];
  }
  return out;
}

bool mentions(const std::vector<std::string>& argv, std::string_view placeholder) {
  return std::any_of(argv.begin(), argv.end(), [&](const std::string& a) {
    return a.find(placeholder) != std::string::npos;
  });
}

std::optional<std::string> readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The last lines of a stream, for an error message.
std::string tail(const std::string& text) {
  std::string t = text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  size_t pos = t.size();
  size_t lines = 0;
  while (pos > 0) {
    const size_t nl = t.rfind('\n', pos - 1);
    if (nl == std::string::npos) {
      pos = 0;
      break;
    }
    if (++lines == kErrorTailLines) {
      pos = nl + 1;
      break;
    }
    pos = nl;
  }
  std::string out = t.substr(pos);
  if (out.size() > kErrorTailBytes) out = "..." + out.substr(out.size() - kErrorTailBytes);
  return out;
}

// Fields of a document another program wrote: a wrong type reads as absent.
std::string stringOr(const json& j, const char* key, const std::string& fallback) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}
bool boolOr(const json& j, const char* key, bool fallback) {
  const auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

std::string describeMs(int64_t ms) {
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms";
}

// Claude Code's result object: all of stdout (--output-format json), or the
// last line that is one (stream-json). Older versions printed an array of
// messages ending with it.
std::optional<json> findClaudeResult(const std::string& out) {
  auto isResult = [](const json& j) {
    if (!j.is_object()) return false;
    if (j.contains("type")) return stringOr(j, "type", "") == "result";
    return j.contains("is_error") || j.contains("subtype");
  };
  const json whole = json::parse(out, nullptr, false);
  if (!whole.is_discarded()) {
    if (isResult(whole)) return whole;
    if (whole.is_array()) {
      for (auto it = whole.rbegin(); it != whole.rend(); ++it) {
        if (isResult(*it)) return *it;
      }
    }
  }
  std::istringstream lines(out);
  std::optional<json> last;
  for (std::string line; std::getline(lines, line);) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && isResult(j)) last = j;
  }
  return last;
}

std::string joinErrors(const json& errors) {
  std::string out;
  if (!errors.is_array()) return out;
  for (const auto& e : errors) {
    if (!out.empty()) out += "; ";
    out += e.is_string() ? e.get<std::string>() : e.dump();
  }
  return out;
}

// Removes, after the run, the files this plugin put into the workspace and
// the directories it had to create for them (when they are empty).
class WorkspaceCleanup {
 public:
  ~WorkspaceCleanup() {
    std::error_code ec;
    for (const auto& f : files_) fs::remove(f, ec);
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) fs::remove(*it, ec);  // if empty
  }
  void removeFile(const fs::path& p) { files_.push_back(p); }
  // Remembers the parents of `file` below `root` that do not exist yet, to
  // remove them afterwards if the run created them and left them empty.
  void removeNewParents(const fs::path& root, const fs::path& file) {
    fs::path dir = root;
    for (const auto& part : file.parent_path().lexically_relative(root)) {
      if (part == ".") continue;
      dir /= part;
      if (!fs::exists(dir)) dirs_.push_back(dir);
    }
  }
  // Creates the parents of `file` below `root`, remembering the new ones.
  void createParents(const fs::path& root, const fs::path& file) {
    fs::path dir = root;
    const fs::path rel = file.parent_path().lexically_relative(root);
    for (const auto& part : rel) {
      if (part == ".") continue;
      dir /= part;
      if (fs::exists(dir)) continue;
      fs::create_directory(dir);
      dirs_.push_back(dir);
    }
  }

 private:
  std::vector<fs::path> files_;
  std::vector<fs::path> dirs_;
};

class CommandAgent : public kiln::sdk::CodeAgent {
 public:
  static constexpr kiln::sdk::PluginInfo kInfo{
      "command", "Command-line agent", "0.1.0",
      "Runs any command-line code agent (Claude Code, Aider, Codex CLI, a script) in the build's "
      "workspace, with the prompt on stdin, as an argument or in a file.",
      R"({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": ["argv"],
        "additionalProperties": false,
        "properties": {
          "argv": {
            "type": "array", "minItems": 1, "items": {"type": "string"},
            "description": "The agent's command line, program first; never run through a shell. A bare program name is looked up in PATH when the build runs (it need not exist before). Placeholders, replaced inside every item: {prompt} (the rendered prompt), {prompt_file} (absolute path of the prompt file), {workspace} (absolute path of the checkout, also the working directory), {task_id}."
          },
          "prompt_via": {
            "type": "string", "enum": ["stdin", "arg", "file"], "default": "stdin",
            "description": "How the agent gets the prompt. stdin: written to its standard input. arg: as an argument where argv says {prompt}, else appended as the last argument. file: written to prompt_file, which argv can name with {prompt_file}. With arg and file, standard input is /dev/null."
          },
          "prompt_file": {
            "type": "string", "minLength": 1, "default": ".kiln/prompt.md",
            "description": "Where the prompt is written (prompt_via file, or argv mentions {prompt_file}), relative to the workspace. Removed after the run, so it is never committed."
          },
          "env": {
            "type": "object", "additionalProperties": {"type": "string"}, "default": {},
            "description": "Variables added to the agent's environment. Otherwise it sees only PATH, HOME, LANG, LC_ALL, TZ, TMPDIR, USER, LOGNAME and SHELL from kiln's environment, and KILN_TASK_ID, KILN_PROJECT_ID, KILN_BRANCH and KILN_WORKSPACE. Pass a credential with ${VAR} (taken from kiln's environment when the configuration is loaded)."
          },
          "timeout_s": {
            "type": "integer", "minimum": 1, "maximum": 86400,
            "description": "Stop the agent (its whole process group: SIGTERM, then SIGKILL) after this many seconds. The build's own time limit wins when it is shorter."
          },
          "output_format": {
            "type": "string", "enum": ["text", "claude-json"], "default": "text",
            "description": "How to judge the run. text: success is exit status 0, the output is stdout. claude-json: stdout is Claude Code's result (--output-format json, or the last line of stream-json); success also needs is_error false and subtype \"success\", the output is its result text."
          },
          "artifacts_manifest": {
            "type": "string", "minLength": 1, "default": ".kiln/artifacts.json",
            "description": "A file, relative to the workspace, in which the agent may declare artifacts: a JSON array of {\"name\": ..., \"path\": ...}, paths relative to the workspace. Entries that leave the workspace or name no file are ignored with a warning. Removed after it is read."
          }
        }
      })"};

  CommandAgent(Call&, std::string_view config) {
    const json c = json::parse(config);
    for (const auto& a : c.at("argv")) argv_.push_back(a.get<std::string>());
    if (argv_.empty() || argv_[0].empty()) {
      throw Error("argv[0] (the program) must not be empty", KILN_ERR_INVALID_ARGUMENT);
    }
    const std::string via = c.value("prompt_via", "stdin");
    prompt_via_ = via == "arg"    ? PromptVia::kArg
                  : via == "file" ? PromptVia::kFile
                                  : PromptVia::kStdin;
    prompt_file_ = c.value("prompt_file", ".kiln/prompt.md");
    manifest_ = c.value("artifacts_manifest", ".kiln/artifacts.json");
    for (const auto& [name, path] :
         {std::pair{"prompt_file", prompt_file_}, std::pair{"artifacts_manifest", manifest_}}) {
      if (!isContainedRelative(path)) {
        throw Error(std::string(name) + " must be a relative path inside the workspace, not \"" +
                        path.string() + "\"",
                    KILN_ERR_INVALID_ARGUMENT);
      }
    }
    if (c.contains("env")) {
      for (const auto& [k, v] : c["env"].items()) env_[k] = v.get<std::string>();
    }
    if (c.contains("timeout_s")) timeout_ms_ = c["timeout_s"].get<int64_t>() * 1000;
    output_format_ = c.value("output_format", "text") == "claude-json" ? OutputFormat::kClaudeJson
                                                                       : OutputFormat::kText;
  }

  std::string execute(Call& call, std::string_view request) override {
    const json req = json::parse(request);
    const std::string workspace_text = stringOr(req, "workspace", "");
    if (workspace_text.empty() || workspace_text[0] != '/') {
      throw Error("the request's workspace must be an absolute path", KILN_ERR_INVALID_ARGUMENT);
    }
    const fs::path workspace = fs::path(workspace_text).lexically_normal();
    if (!fs::is_directory(workspace)) {
      throw Error("workspace " + workspace.string() + " is not a directory",
                  KILN_ERR_INVALID_ARGUMENT);
    }
    const std::string prompt = stringOr(req, "prompt", "");
    const std::string task_id = stringOr(req, "task_id", "");

    WorkspaceCleanup cleanup;
    const fs::path prompt_path = workspace / prompt_file_;
    if (prompt_via_ == PromptVia::kFile || mentions(argv_, "{prompt_file}")) {
      writePromptFile(prompt_path, workspace, prompt, &cleanup);
    }
    const fs::path manifest_path = workspace / manifest_;
    const std::optional<std::string> manifest_before = readFile(manifest_path);
    cleanup.removeNewParents(workspace, manifest_path);

    bool used_prompt = false;
    const std::map<std::string, std::string> values = {{"prompt", prompt},
                                                       {"prompt_file", prompt_path.string()},
                                                       {"workspace", workspace.string()},
                                                       {"task_id", task_id}};
    json argv = json::array();
    for (const auto& a : argv_) argv.push_back(substitute(a, values, &used_prompt));
    if (prompt_via_ == PromptVia::kArg && !used_prompt) argv.push_back(prompt);

    json env = env_;
    env["KILN_TASK_ID"] = task_id;
    env["KILN_PROJECT_ID"] = stringOr(req, "project_id", "");
    env["KILN_BRANCH"] = stringOr(req, "branch", "");
    env["KILN_WORKSPACE"] = workspace.string();

    json process = {{"argv", argv},
                    {"cwd", workspace.string()},
                    {"env", env},
                    {"timeout_ms", effectiveTimeoutMs(req)},
                    {"stream_output", true}};
    if (prompt_via_ == PromptVia::kStdin) process["stdin"] = prompt;

    call.progress("running " + argv_[0]);
    // A program that cannot be started fails the call with the host's
    // message ("cannot run <argv0>: No such file or directory").
    const json ran = json::parse(call.runProcess(process.dump()));
    // The manifest is the agent's message to kiln, not a change to commit.
    const std::optional<std::string> manifest_after = readFile(manifest_path);
    const bool declared = manifest_after && manifest_after != manifest_before;
    if (declared) cleanup.removeFile(manifest_path);
    if (ran.value("timed_out", false)) {
      throw Error("agent " + argv_[0] + " timed out after " +
                      describeMs(process["timeout_ms"].get<int64_t>()) +
                      "; its processes were stopped",
                  KILN_ERR_TIMEOUT);
    }
    if (ran.value("cancelled", false)) {
      throw Error("agent " + argv_[0] + " was cancelled", KILN_ERR_CANCELLED);
    }

    json result = judge(ran);
    result["artifacts"] =
        declared ? readArtifacts(call, workspace, manifest_path, *manifest_after) : json::array();
    return result.dump(-1, ' ', false, json::error_handler_t::replace);
  }

 private:
  int64_t effectiveTimeoutMs(const json& req) const {
    int64_t t = timeout_ms_.value_or(kDefaultTimeoutMs);
    const auto it = req.find("timeout_ms");
    if (it != req.end() && it->is_number_integer() && it->get<int64_t>() > 0) {
      t = timeout_ms_ ? std::min(t, it->get<int64_t>()) : it->get<int64_t>();
    }
    return std::clamp<int64_t>(t, 1, kMaxTimeoutMs);
  }

  static void writePromptFile(const fs::path& path, const fs::path& workspace,
                              const std::string& prompt, WorkspaceCleanup* cleanup) {
    try {
      cleanup->createParents(workspace, path);
    } catch (const fs::filesystem_error& e) {
      throw Error(std::string("cannot create the prompt file's folder: ") + e.what());
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    cleanup->removeFile(path);
    if (!out || !out.write(prompt.data(), static_cast<std::streamsize>(prompt.size())) ||
        !out.flush()) {
      throw Error("cannot write the prompt file " + path.string() + ": " + std::strerror(errno));
    }
  }

  // The result document from the runner's answer.
  json judge(const json& ran) const {
    const int exit_code = ran.value("exit_code", -1);
    const int signal = ran.value("signal", 0);
    const std::string out = ran.value("stdout", "");
    const std::string err = ran.value("stderr", "");
    json metadata = {{"command", argv_[0]},
                     {"exit_code", exit_code},
                     {"duration_ms", ran.value("duration_ms", int64_t{0})}};
    if (signal != 0) metadata["signal"] = signal;
    if (ran.value("truncated", false)) metadata["output_truncated"] = true;

    std::string exit_problem;
    if (signal != 0) {
      exit_problem = "agent was killed by signal " + std::to_string(signal);
    } else if (exit_code != 0) {
      exit_problem = "agent exited with status " + std::to_string(exit_code);
    }
    if (!exit_problem.empty()) {
      const std::string t = tail(err.empty() ? out : err);
      if (!t.empty())
        exit_problem += (err.empty() ? "; stdout ends with:\n" : "; stderr ends with:\n") + t;
    }

    json result = {{"success", false}, {"output", ""}, {"error", ""}};
    if (output_format_ == OutputFormat::kText) {
      result["output"] = out;
      result["success"] = exit_problem.empty();
      result["error"] = exit_problem;
    } else {
      const std::optional<json> claude = findClaudeResult(out);
      std::string problem = exit_problem;
      if (claude) {
        const std::string subtype = stringOr(*claude, "subtype", "success");
        const bool is_error = boolOr(*claude, "is_error", false);
        const auto text = claude->find("result");
        if (text != claude->end() && text->is_string()) result["output"] = *text;
        json meta = json::object();
        for (const char* key : {"subtype", "is_error", "session_id", "total_cost_usd", "num_turns",
                                "duration_ms", "usage", "stop_reason"}) {
          if (claude->contains(key)) meta[key] = (*claude)[key];
        }
        metadata["claude"] = std::move(meta);
        if (is_error || subtype != "success") {
          std::string detail = joinErrors(claude->value("errors", json::array()));
          if (detail.empty() && text != claude->end() && text->is_string()) detail = *text;
          std::string claude_problem =
              "claude reported " + (subtype == "success" ? std::string("an error") : subtype);
          if (!detail.empty()) claude_problem += ": " + detail;
          if (exit_code != 0 || signal != 0) {
            claude_problem += signal != 0 ? " (killed by signal " + std::to_string(signal) + ")"
                                          : " (exit status " + std::to_string(exit_code) + ")";
          }
          problem = claude_problem;
        }
      } else if (problem.empty()) {
        problem =
            "the agent printed no Claude Code result object on stdout (is --output-format json "
            "set?)";
      }
      result["success"] = problem.empty();
      result["error"] = problem;
    }
    result["metadata"] = std::move(metadata);
    return result;
  }

  // The artifacts the agent declared in the manifest during this run.
  static json readArtifacts(Call& call, const fs::path& workspace, const fs::path& manifest,
                            const std::string& text) {
    json artifacts = json::array();
    const json doc = json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_array()) {
      call.warn("artifacts manifest " + manifest.string() +
                " is not a JSON array of {\"name\", \"path\"}; no artifacts taken");
      return artifacts;
    }
    std::error_code ec;
    const fs::path root = fs::weakly_canonical(workspace, ec);
    std::set<std::string> names;
    for (const auto& entry : doc) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
          !entry.contains("path") || !entry["path"].is_string() ||
          entry["name"].get<std::string>().empty()) {
        call.warn("artifacts manifest: ignoring an entry without string \"name\" and \"path\": " +
                  entry.dump());
        continue;
      }
      const std::string name = entry["name"];
      const fs::path declared = entry["path"].get<std::string>();
      // Symlinks are resolved, so a link pointing out of the workspace is caught too.
      const fs::path real =
          fs::weakly_canonical(declared.is_absolute() ? declared : workspace / declared, ec);
      const fs::path rel = real.lexically_relative(root);
      if (ec || !isContainedRelative(rel)) {
        call.warn("artifacts manifest: ignoring \"" + name + "\": " + declared.string() +
                  " is outside the workspace");
        continue;
      }
      if (!fs::is_regular_file(real)) {
        call.warn("artifacts manifest: ignoring \"" + name + "\": no file at " + declared.string());
        continue;
      }
      if (!names.insert(name).second) {
        call.warn("artifacts manifest: ignoring a second artifact named \"" + name + "\"");
        continue;
      }
      artifacts.push_back({{"name", name}, {"path", rel.string()}});
    }
    return artifacts;
  }

  std::vector<std::string> argv_;
  PromptVia prompt_via_ = PromptVia::kStdin;
  fs::path prompt_file_;
  fs::path manifest_;
  std::map<std::string, std::string> env_;
  std::optional<int64_t> timeout_ms_;
  OutputFormat output_format_ = OutputFormat::kText;
};

}  // namespace

KILN_PLUGIN_LIBRARY("kiln-code-agent-command", "0.1.0", CommandAgent)
