#include "kiln/domain/build.h"

#include <cstdio>
#include <ctime>
#include <mutex>
#include <random>
#include <regex>

namespace kiln::domain {

TimeMs nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string formatTime(TimeMs t) {
  const std::time_t secs = static_cast<std::time_t>(t / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];  // generous: the compiler cannot bound the int fields
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(t % 1000));
  return buf;
}

std::string_view statusName(BuildStatus s) {
  switch (s) {
    case BuildStatus::kPending: return "pending";
    case BuildStatus::kRunning: return "running";
    case BuildStatus::kCompleted: return "completed";
    case BuildStatus::kFailed: return "failed";
    case BuildStatus::kCancelled: return "cancelled";
  }
  return "pending";
}

std::optional<BuildStatus> parseStatus(std::string_view name) {
  for (BuildStatus s : {BuildStatus::kPending, BuildStatus::kRunning, BuildStatus::kCompleted,
                        BuildStatus::kFailed, BuildStatus::kCancelled}) {
    if (statusName(s) == name) return s;
  }
  return std::nullopt;
}

bool isTerminal(BuildStatus s) {
  return s == BuildStatus::kCompleted || s == BuildStatus::kFailed || s == BuildStatus::kCancelled;
}

std::string_view errorKindName(ErrorKind k) {
  switch (k) {
    case ErrorKind::kNone: return "";
    case ErrorKind::kWorkload: return "workload";
    case ErrorKind::kInfrastructure: return "infrastructure";
    case ErrorKind::kTimeout: return "timeout";
    case ErrorKind::kInvalidInput: return "invalid_input";
    case ErrorKind::kCancelled: return "cancelled";
  }
  return "";
}

std::optional<ErrorKind> parseErrorKind(std::string_view name) {
  for (ErrorKind k : {ErrorKind::kNone, ErrorKind::kWorkload, ErrorKind::kInfrastructure,
                      ErrorKind::kTimeout, ErrorKind::kInvalidInput, ErrorKind::kCancelled}) {
    if (errorKindName(k) == name) return k;
  }
  return std::nullopt;
}

bool canTransition(BuildStatus from, BuildStatus to, TransitionReason reason) {
  using S = BuildStatus;
  using R = TransitionReason;
  if (isTerminal(from)) return false;
  switch (reason) {
    case R::kClaimed: return from == S::kPending && to == S::kRunning;
    case R::kFinished: return from == S::kRunning && (to == S::kCompleted || to == S::kFailed);
    case R::kCancelled: return (from == S::kPending || from == S::kRunning) && to == S::kCancelled;
    case R::kLeaseExpired: return from == S::kRunning && (to == S::kPending || to == S::kFailed);
    case R::kReleased: return from == S::kRunning && to == S::kPending;
  }
  return false;
}

std::string newTaskId(TimeMs now) {
  // RFC 9562 UUIDv7: 48-bit ms timestamp, version 7, 12-bit rand_a, 62 bits
  // random. rand_a is a counter within one millisecond (RFC 9562 6.2, method
  // 1), so ids made by this process sort in creation order even when many
  // share a millisecond; a clock that steps back reuses the last time.
  static std::mutex mu;
  static uint64_t last_ms = 0;
  static uint64_t counter = 0;
  static std::mt19937_64 rng(std::random_device{}());
  uint64_t ts = static_cast<uint64_t>(now) & 0xFFFFFFFFFFFFull;
  uint64_t seq = 0;
  uint64_t r2 = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (ts <= last_ms) {
      ts = last_ms;
      if (++counter > 0xFFF) {  // 4096 ids in one ms: borrow the next ms
        ts = ++last_ms;
        counter = 0;
      }
    } else {
      last_ms = ts;
      counter = rng() & 0x3FF;  // random start, leaving room to count up
    }
    seq = counter;
    r2 = rng();
  }
  const uint64_t hi = (ts << 16) | 0x7000u | seq;
  const uint64_t lo = (r2 & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xFFFF), static_cast<unsigned>(hi & 0xFFFF),
                static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFull));
  return buf;
}

bool isValidTaskId(std::string_view id) {
  static const std::regex kUuid(
      "[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  return std::regex_match(id.begin(), id.end(), kUuid);
}

bool isValidProjectId(std::string_view id) {
  static const std::regex kId("[a-z0-9][a-z0-9._-]{0,62}");
  return std::regex_match(id.begin(), id.end(), kId);
}

namespace {

bool isValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xE  ? 3
                     : (c >> 3) == 0x1E ? 4
                                        : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

bool isHttpUrl(const std::string& url) {
  static const std::regex kUrl(R"(https?://[^\s/?#@]+(:[0-9]{1,5})?([/?#][^\s]*)?)",
                               std::regex::icase);
  return std::regex_match(url, kUrl);
}

}  // namespace

std::vector<FieldError> validateSpec(const BuildSpec& spec, const SpecLimits& limits) {
  std::vector<FieldError> errors;
  auto add = [&](std::string field, std::string message) {
    errors.push_back({std::move(field), std::move(message)});
  };
  if (spec.prompt.find_first_not_of(" \t\r\n") == std::string::npos) {
    add("prompt", spec.prompt.empty() ? "prompt is required" : "prompt must not be blank");
  } else if (static_cast<int64_t>(spec.prompt.size()) > limits.max_prompt_bytes) {
    add("prompt", "prompt is " + std::to_string(spec.prompt.size()) + " bytes; the limit is " +
                      std::to_string(limits.max_prompt_bytes));
  } else if (!isValidUtf8(spec.prompt)) {
    add("prompt", "prompt must be valid UTF-8");
  }
  if (spec.template_name) {
    static const std::regex kTemplate("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
    if (!std::regex_match(*spec.template_name, kTemplate) ||
        spec.template_name->find("..") != std::string::npos) {
      add("template",
          "template must be 1-64 letters, digits, '.', '_' or '-', starting with a "
          "letter or digit, got \"" +
              *spec.template_name + "\"");
    }
  }
  static const std::regex kVariable("[A-Za-z_][A-Za-z0-9_]{0,63}");
  for (const auto& [name, value] : spec.variables) {
    if (!std::regex_match(name, kVariable)) {
      add("variables." + name, "variable names must match [A-Za-z_][A-Za-z0-9_]{0,63}");
    }
  }
  if (spec.callback_url && !isHttpUrl(*spec.callback_url)) {
    add("callback_url", "callback_url must be an absolute http:// or https:// URL, got \"" +
                            *spec.callback_url + "\"");
  }
  if (spec.branch) {
    static const std::regex kBranch(R"([A-Za-z0-9._/-]{1,200})");
    const std::string& b = *spec.branch;
    if (!std::regex_match(b, kBranch) || b.front() == '/' || b.back() == '/' || b.front() == '-' ||
        b.find("..") != std::string::npos || b.find("//") != std::string::npos ||
        (b.size() >= 5 && b.compare(b.size() - 5, 5, ".lock") == 0)) {
      add("branch",
          "branch must be a valid git branch name (letters, digits, '.', '_', '-', '/'), "
          "got \"" +
              b + "\"");
    }
  }
  if (spec.commit_message &&
      spec.commit_message->find_first_not_of(" \t\r\n") == std::string::npos) {
    add("commit_message", "commit_message must not be blank when given");
  }
  if (spec.timeout_s && (*spec.timeout_s < 1 || *spec.timeout_s > limits.max_timeout_s)) {
    add("timeout_s", "timeout_s must be between 1 and " + std::to_string(limits.max_timeout_s) +
                         " (the project's maximum), got " + std::to_string(*spec.timeout_s));
  }
  return errors;
}

}  // namespace kiln::domain
