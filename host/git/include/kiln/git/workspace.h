// Git workspaces through libgit2: clone a project's repository into a build's
// workspace, see what the agent changed, commit it and push it.
//
// Every function is synchronous and may be called from any thread; calls on
// different directories run in parallel (libgit2 keeps its error state per
// thread). Two calls on the same directory at once are not supported.
//
// Errors (kiln::Error):
//   kInvalidArgument  bad input, or authentication failed (not retryable)
//   kNotFound         missing branch / repository / commit
//   kConflict         nothing to commit; clone target not empty
//   kFailed           the server rejected a push (not retryable)
//   kUnavailable      network: unreachable, refused, DNS (retryable); a
//                     rejected TLS certificate (not retryable)
//   kCancelled        RemoteOptions::cancelled returned true
//   kInternal         anything else libgit2 reports
// Messages name the operation and carry libgit2's text; they never contain a
// credential.
//
// Token rules: credentials reach libgit2 only through its credential
// callback, asked from RemoteOptions::credentials. A URL carrying a
// password (user:token@) is refused with kInvalidArgument; a user name alone
// (ssh://git@host/...) is fine. `origin` is written to .git/config with the
// URL as given and nothing else.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kiln/domain/result.h"

namespace kiln::git {

struct Credentials {
  enum class Type { kNone, kUserPass, kSshKey };
  Type type = Type::kNone;
  // kUserPass: HTTPS basic auth (a token goes in `password`, username e.g.
  // "x-access-token"). kSshKey: `username` (default: the URL's, else "git"),
  // key files, optional `passphrase`; `public_key_path` may be empty.
  std::string username, password, private_key_path, public_key_path, passphrase;
};

// Asked by libgit2's credential callback, once per attempt; `allowed` is a
// bitmask of GIT_CREDENTIAL_* types (libgit2's values, passed through). Runs
// on the calling thread, inside the operation. An error aborts the operation
// with that error. Type::kNone means "no credentials": the operation then
// fails as an authentication failure if the server insists.
using CredentialProvider =
    std::function<Result<Credentials>(const std::string& url, unsigned allowed)>;

struct RemoteOptions {
  // Empty: no credentials (file://, public repositories).
  CredentialProvider credentials;
  // Polled from libgit2's progress callbacks (and before connecting); true
  // aborts the operation with kCancelled. Empty: never cancelled.
  std::function<bool()> cancelled;
  // Credential attempts per operation. libgit2 asks again after every 401,
  // so a wrong token would otherwise be retried; past this the operation
  // fails with kInvalidArgument "authentication to <url> failed: ...".
  int max_credential_attempts = 2;
};

struct CloneOptions {
  std::string url;
  // The branch to check out; empty: the remote's default branch.
  std::string branch;
  // Must not exist or be empty. On failure it is left as it was found
  // (removed if it did not exist, emptied if it was empty).
  std::string dir;
  RemoteOptions remote;
};

// Clones `url` into `dir` and checks out `branch` (a local branch tracking
// origin/<branch>; origin = url). Only that branch's history (and tags on it)
// is fetched, in full: libgit2 1.5 has no shallow clone (added in 1.7).
// An EMPTY remote (no commits) is fine: dir becomes a repository whose HEAD
// is the unborn `branch`, with origin = url.
// Errors: kNotFound "branch X does not exist in <url>", and for a repository
// that does not exist (missing local path, HTTP 404); kUnavailable
// (retryable) when the remote cannot be reached; kInvalidArgument
// "authentication to <url> failed: ..."; kCancelled; kConflict when dir is
// not empty.
Result<void> cloneRepository(const CloneOptions& o);

struct FileChange {
  std::string path;    // relative to the work tree, '/'-separated
  std::string change;  // "added" | "modified" | "deleted"
};

// The working tree against HEAD (the index does not matter): untracked files
// are included, ignored files are not, sorted by path. On an unborn branch
// everything present is "added". A file added to the index and then deleted
// again is not a change.
Result<std::vector<FileChange>> detectChanges(const std::string& dir);

struct CommitOptions {
  std::string dir;
  // Used as given, apart from git's cleanup (trailing whitespace, one final
  // newline); trailers such as "Kiln-Task: <id>" belong in it.
  std::string message;
  // Author and committer. Empty: the user's git configuration
  // (user.name/user.email), kInvalidArgument when that is unset too.
  std::string author_name;
  std::string author_email;
};

// Stages everything (additions, modifications, deletions; ignored files
// stay out), commits on the current branch (creating it if unborn) and
// returns the commit's full 40-hex sha. kConflict "nothing to commit" when
// the tree equals HEAD's.
Result<std::string> commitAll(const CommitOptions& o);

struct PushOptions {
  std::string dir;
  std::string url;
  std::string local_branch;
  // Empty: same as local_branch.
  std::string remote_branch;
  RemoteOptions remote;
};

// Pushes refs/heads/<local_branch> to refs/heads/<remote_branch> at `url`
// through an anonymous remote (never written to .git/config); never forced.
// A rejection - non-fast-forward (detected by libgit2 before uploading, or by
// the server) or a hook's refusal (reported through libgit2's
// push_update_reference callback) - is kFailed "push to <remote_branch>
// rejected: <reason>", with what the server printed (e.g. a hook's message)
// appended. Authentication and network failures as for cloneRepository.
Result<void> push(const PushOptions& o);

// Creates local branch `name` at HEAD's commit and makes it HEAD (the work
// tree is unchanged: it already matches). On an unborn HEAD the unborn
// branch becomes `name`. kConflict if the branch exists.
Result<void> createBranch(const std::string& dir, const std::string& name);

// The full sha of HEAD's commit in the repository at `dir` (a work tree or a
// bare repository); kNotFound when HEAD is unborn or dir is not a repository.
Result<std::string> headSha(const std::string& dir);

}  // namespace kiln::git
