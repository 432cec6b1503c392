// Internal to kiln_git: libgit2 initialisation, owning handles, error
// mapping, and the callbacks every remote operation installs.
#pragma once

#include <git2.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kiln/domain/result.h"
#include "kiln/git/workspace.h"

namespace kiln::git::detail {

// Calls git_libgit2_init() once per process; libgit2 is never shut down
// (other threads may still use it at exit).
void ensureLibgit2();

template <class T, void (*Free)(T*)>
struct Freer {
  void operator()(T* p) const { Free(p); }
};
using RepositoryPtr = std::unique_ptr<git_repository, Freer<git_repository, git_repository_free>>;
using RemotePtr = std::unique_ptr<git_remote, Freer<git_remote, git_remote_free>>;
using ReferencePtr = std::unique_ptr<git_reference, Freer<git_reference, git_reference_free>>;
using IndexPtr = std::unique_ptr<git_index, Freer<git_index, git_index_free>>;
using TreePtr = std::unique_ptr<git_tree, Freer<git_tree, git_tree_free>>;
using CommitPtr = std::unique_ptr<git_commit, Freer<git_commit, git_commit_free>>;
using SignaturePtr = std::unique_ptr<git_signature, Freer<git_signature, git_signature_free>>;
using StatusListPtr =
    std::unique_ptr<git_status_list, Freer<git_status_list, git_status_list_free>>;

// libgit2's message for the call that just returned `rc` (read it before the
// next libgit2 call on this thread).
std::string lastErrorMessage(int rc);

// "<what>: <libgit2 message>" as an Error with `code`.
Error gitError(ErrorCode code, const std::string& what, int rc);

// The repository whose work tree is `dir` (a bare one only if allow_bare).
// kInvalidArgument when `url` carries a password ("https://user:token@host"):
// credentials must come through the callback, never in a URL that libgit2
// would write to .git/config. The message shows the URL with "***".
Result<void> checkPlainUrl(const std::string& url, const std::string& operation);

Result<RepositoryPtr> openRepository(const std::string& dir, bool allow_bare = false);

// One remote operation (clone or push): the payload of libgit2's remote
// callbacks. It asks for credentials with the attempts capped, polls
// cancellation, records push rejections and what the server printed, and
// turns libgit2's failures into kiln Errors without leaking a secret.
// Lives on the caller's stack for the whole operation.
class RemoteSession {
 public:
  RemoteSession(std::string url, const RemoteOptions& options);
  RemoteSession(const RemoteSession&) = delete;
  RemoteSession& operator=(const RemoteSession&) = delete;

  // Callbacks whose payload is this session.
  git_remote_callbacks callbacks();

  // Polls RemoteOptions::cancelled; once true, stays true.
  bool isCancelled();

  // The Error for a failed remote call that returned `rc`; `operation` names
  // it ("clone of <url>"). Must be called right after that call.
  Error remoteError(int rc, const std::string& operation) const;

  // Push results: (ref, server's reason) for every rejected ref, and the
  // server's messages (sideband: hook output), secrets removed.
  const std::vector<std::pair<std::string, std::string>>& rejections() const { return rejections_; }
  std::string serverMessages() const;

  // `text` with every credential this session handed out replaced by "***".
  std::string redact(std::string text) const;

  const std::string& url() const { return url_; }

 private:
  static int credentialCallback(git_credential** out, const char* url,
                                const char* username_from_url, unsigned int allowed, void* payload);
  static int transferProgressCallback(const git_indexer_progress* stats, void* payload);
  static int sidebandCallback(const char* str, int len, void* payload);
  static int packProgressCallback(int stage, uint32_t current, uint32_t total, void* payload);
  static int pushTransferProgressCallback(unsigned int current, unsigned int total, size_t bytes,
                                          void* payload);
  static int pushUpdateReferenceCallback(const char* refname, const char* status, void* payload);

  int credential(git_credential** out, const char* username_from_url, unsigned int allowed);
  int failAuthentication(std::string why);
  int abortIfCancelled();

  std::string url_;
  const RemoteOptions& options_;
  int attempts_ = 0;
  bool cancelled_ = false;
  std::optional<std::string> auth_failure_;  // set when we gave up on credentials
  std::optional<Error> provider_error_;      // the CredentialProvider failed
  std::vector<std::string> secrets_;
  std::vector<std::pair<std::string, std::string>> rejections_;
  std::string sideband_;
};

}  // namespace kiln::git::detail
