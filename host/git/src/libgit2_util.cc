#include "libgit2_util.h"

#include <algorithm>
#include <filesystem>
#include <mutex>

namespace kiln::git::detail {
namespace {

// What the server prints (hook output) is kept up to this size.
constexpr size_t kMaxServerMessageBytes = 8 * 1024;

// Progress lines git's receive-pack may send on the sideband; not reasons.
bool isProgressLine(const std::string& line) {
  static const char* const kPrefixes[] = {"Resolving deltas", "Unpacking objects",
                                          "Counting objects", "Compressing objects",
                                          "Writing objects",  "Total "};
  for (const char* p : kPrefixes) {
    if (line.rfind(p, 0) == 0) return true;
  }
  return false;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// The folder a local remote URL names (file:// or a plain path), if it is one.
std::optional<std::string> localPath(const std::string& url) {
  if (url.rfind("file://", 0) == 0) return url.substr(7);
  if (url.find("://") != std::string::npos) return std::nullopt;
  // scp-like ssh ("git@host:repo.git") has a ':' before any '/'.
  const auto colon = url.find(':');
  if (colon != std::string::npos && colon < url.find('/')) return std::nullopt;
  return url;
}

}  // namespace

void ensureLibgit2() {
  static std::once_flag once;
  std::call_once(once, [] { git_libgit2_init(); });
}

std::string lastErrorMessage(int rc) {
  const git_error* e = git_error_last();
  if (e != nullptr && e->message != nullptr && e->message[0] != '\0') {
    return trim(e->message);
  }
  return "libgit2 error " + std::to_string(rc);
}

Error gitError(ErrorCode code, const std::string& what, int rc) {
  return makeError(code, what + ": " + lastErrorMessage(rc));
}

Result<void> checkPlainUrl(const std::string& url, const std::string& operation) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return {};
  const auto authority = scheme_end + 3;
  const auto at = url.find('@', authority);
  const auto path = url.find('/', authority);
  if (at == std::string::npos || (path != std::string::npos && at > path)) return {};
  const auto colon = url.find(':', authority);
  if (colon == std::string::npos || colon > at) return {};  // a user name alone is fine
  return makeError(ErrorCode::kInvalidArgument,
                   operation + ": the URL " + url.substr(0, colon + 1) + "***" + url.substr(at) +
                       " carries a password; pass credentials through the credential provider");
}

Result<RepositoryPtr> openRepository(const std::string& dir, bool allow_bare) {
  ensureLibgit2();
  git_repository* repo = nullptr;
  // No search upwards: `dir` itself must be the work tree.
  const int rc =
      git_repository_open_ext(&repo, dir.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH, nullptr);
  if (rc == GIT_ENOTFOUND) {
    return makeError(ErrorCode::kNotFound, "no git repository at " + dir);
  }
  if (rc < 0) return gitError(ErrorCode::kInternal, "opening the repository at " + dir, rc);
  RepositoryPtr owned(repo);
  if (!allow_bare && git_repository_is_bare(repo)) {
    return makeError(ErrorCode::kInvalidArgument, dir + " is a bare repository, not a workspace");
  }
  return owned;
}

RemoteSession::RemoteSession(std::string url, const RemoteOptions& options)
    : url_(std::move(url)), options_(options) {}

git_remote_callbacks RemoteSession::callbacks() {
  git_remote_callbacks cb = GIT_REMOTE_CALLBACKS_INIT;
  // Always installed, also without a provider: our callback then declines,
  // so that "no credentials" is reported as an authentication failure.
  cb.credentials = &RemoteSession::credentialCallback;
  cb.transfer_progress = &RemoteSession::transferProgressCallback;
  cb.sideband_progress = &RemoteSession::sidebandCallback;
  cb.pack_progress = &RemoteSession::packProgressCallback;
  cb.push_transfer_progress = &RemoteSession::pushTransferProgressCallback;
  // Rationale: libgit2 reports refs the server refused (non-fast-forward,
  // hook refusal) only here; git_remote_push itself still returns 0.
  cb.push_update_reference = &RemoteSession::pushUpdateReferenceCallback;
  cb.payload = this;
  return cb;
}

bool RemoteSession::isCancelled() {
  if (!cancelled_ && options_.cancelled && options_.cancelled()) cancelled_ = true;
  return cancelled_;
}

int RemoteSession::abortIfCancelled() {
  if (!isCancelled()) return 0;
  git_error_set_str(GIT_ERROR_CALLBACK, "the operation was cancelled");
  return GIT_EUSER;
}

std::string RemoteSession::redact(std::string text) const {
  for (const auto& secret : secrets_) {
    for (auto pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos + 3)) {
      text.replace(pos, secret.size(), "***");
    }
  }
  return text;
}

std::string RemoteSession::serverMessages() const {
  std::string out;
  std::string line;
  auto flush = [&] {
    line = trim(line);
    if (line.rfind("remote:", 0) == 0) line = trim(line.substr(7));
    if (!line.empty() && !isProgressLine(line)) {
      if (!out.empty()) out += "; ";
      out += line;
    }
    line.clear();
  };
  for (char c : sideband_) {
    if (c == '\n' || c == '\r') {
      flush();
    } else {
      line += c;
    }
  }
  flush();
  return redact(out);
}

int RemoteSession::failAuthentication(std::string why) {
  auth_failure_ = std::move(why);
  git_error_set_str(GIT_ERROR_CALLBACK, auth_failure_->c_str());
  return GIT_EAUTH;
}

int RemoteSession::credential(git_credential** out, const char* username_from_url,
                              unsigned int allowed) {
  if (const int rc = abortIfCancelled(); rc != 0) return rc;
  if (!options_.credentials) {
    return failAuthentication("the server asked for credentials and none are configured");
  }
  // SSH first asks for the user name alone; that is not an attempt.
  const bool username_only =
      (allowed & GIT_CREDENTIAL_USERNAME) != 0 &&
      (allowed & (GIT_CREDENTIAL_USERPASS_PLAINTEXT | GIT_CREDENTIAL_SSH_KEY)) == 0;
  const int max_attempts = std::max(1, options_.max_credential_attempts);
  if (!username_only) {
    // Rationale: libgit2 calls us again after every rejection (HTTP 401),
    // so without a cap a wrong token is retried until libgit2 gives up.
    if (attempts_ >= max_attempts) {
      return failAuthentication("the credentials were rejected (" + std::to_string(attempts_) +
                                (attempts_ == 1 ? " attempt)" : " attempts)"));
    }
    ++attempts_;
  }

  auto creds = options_.credentials(url_, allowed);
  if (!creds.ok()) {
    Error e = creds.error();
    e.message = "getting credentials for " + url_ + ": " + redact(e.message);
    provider_error_ = std::move(e);
    git_error_set_str(GIT_ERROR_CALLBACK, "the credential provider failed");
    return GIT_EUSER;
  }
  const Credentials& c = *creds;
  for (const std::string* s : {&c.password, &c.passphrase}) {
    if (!s->empty() && std::find(secrets_.begin(), secrets_.end(), *s) == secrets_.end()) {
      secrets_.push_back(*s);
    }
  }

  switch (c.type) {
    case Credentials::Type::kNone:
      return failAuthentication("the server asked for credentials and none are configured");
    case Credentials::Type::kUserPass:
      if ((allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT) == 0) {
        return failAuthentication("the server does not accept a user name and password/token");
      }
      return git_credential_userpass_plaintext_new(out, c.username.c_str(), c.password.c_str());
    case Credentials::Type::kSshKey: {
      std::string user = c.username;
      if (user.empty() && username_from_url != nullptr) user = username_from_url;
      if (user.empty()) user = "git";
      if (username_only) return git_credential_username_new(out, user.c_str());
      if ((allowed & GIT_CREDENTIAL_SSH_KEY) == 0) {
        return failAuthentication("the server does not accept an SSH key");
      }
      return git_credential_ssh_key_new(
          out, user.c_str(), c.public_key_path.empty() ? nullptr : c.public_key_path.c_str(),
          c.private_key_path.c_str(), c.passphrase.empty() ? nullptr : c.passphrase.c_str());
    }
  }
  return failAuthentication("unknown credential type");
}

int RemoteSession::credentialCallback(git_credential** out, const char* /*url*/,
                                      const char* username_from_url, unsigned int allowed,
                                      void* payload) {
  return static_cast<RemoteSession*>(payload)->credential(out, username_from_url, allowed);
}

int RemoteSession::transferProgressCallback(const git_indexer_progress* /*stats*/, void* payload) {
  return static_cast<RemoteSession*>(payload)->abortIfCancelled();
}

int RemoteSession::sidebandCallback(const char* str, int len, void* payload) {
  auto* self = static_cast<RemoteSession*>(payload);
  if (str != nullptr && len > 0 && self->sideband_.size() < kMaxServerMessageBytes) {
    self->sideband_.append(
        str, std::min(static_cast<size_t>(len), kMaxServerMessageBytes - self->sideband_.size()));
  }
  return self->abortIfCancelled();
}

int RemoteSession::packProgressCallback(int /*stage*/, uint32_t /*current*/, uint32_t /*total*/,
                                        void* payload) {
  return static_cast<RemoteSession*>(payload)->abortIfCancelled();
}

int RemoteSession::pushTransferProgressCallback(unsigned int /*current*/, unsigned int /*total*/,
                                                size_t /*bytes*/, void* payload) {
  return static_cast<RemoteSession*>(payload)->abortIfCancelled();
}

int RemoteSession::pushUpdateReferenceCallback(const char* refname, const char* status,
                                               void* payload) {
  // status is NULL when the server accepted the update.
  if (status != nullptr) {
    static_cast<RemoteSession*>(payload)->rejections_.emplace_back(refname ? refname : "", status);
  }
  return 0;
}

Error RemoteSession::remoteError(int rc, const std::string& operation) const {
  const git_error* last = git_error_last();
  const int klass = last != nullptr ? last->klass : GIT_ERROR_NONE;
  const std::string message = redact(lastErrorMessage(rc));

  if (cancelled_) return makeError(ErrorCode::kCancelled, operation + " was cancelled");
  if (provider_error_) return *provider_error_;
  // libgit2 itself gives up after many replays of a rejected login.
  const bool replays_exhausted = attempts_ > 0 &&
                                 (klass == GIT_ERROR_HTTP || klass == GIT_ERROR_SSH) &&
                                 message.find("authentication") != std::string::npos;
  if (auth_failure_ || rc == GIT_EAUTH || replays_exhausted) {
    return makeError(ErrorCode::kInvalidArgument, "authentication to " + url_ + " failed: " +
                                                      redact(auth_failure_.value_or(message)));
  }
  if (const auto local = localPath(url_)) {
    if (!std::filesystem::exists(*local)) {
      return makeError(ErrorCode::kNotFound, operation + ": " + *local + " does not exist");
    }
    if (klass == GIT_ERROR_REPOSITORY) {
      return makeError(ErrorCode::kNotFound, operation + ": " + message);
    }
  }
  if (rc == GIT_ECERTIFICATE) {
    return makeError(ErrorCode::kUnavailable,
                     operation + ": the TLS certificate was rejected: " + message);
  }
  // libgit2 1.5 reports an HTTP status only as text; a 404 is a repository
  // that does not exist (or is hidden from these credentials), not an outage.
  if (klass == GIT_ERROR_HTTP && message.find("status code: 404") != std::string::npos) {
    return makeError(ErrorCode::kNotFound,
                     operation + ": the repository was not found (" + message + ")");
  }
  switch (klass) {
    case GIT_ERROR_NET:
    case GIT_ERROR_HTTP:
    case GIT_ERROR_SSH:
    case GIT_ERROR_SSL:
    case GIT_ERROR_OS:
      return makeError(ErrorCode::kUnavailable, operation + ": " + message, /*retryable=*/true);
    default: break;
  }
  if (rc == GIT_ENOTFOUND) return makeError(ErrorCode::kNotFound, operation + ": " + message);
  return makeError(ErrorCode::kInternal, operation + ": " + message);
}

}  // namespace kiln::git::detail
