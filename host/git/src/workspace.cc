#include "kiln/git/workspace.h"

#include <algorithm>
#include <filesystem>
#include <string_view>
#include <system_error>

#include "libgit2_util.h"

namespace kiln::git {
namespace {

using detail::CommitPtr;
using detail::gitError;
using detail::IndexPtr;
using detail::ReferencePtr;
using detail::RemotePtr;
using detail::RemoteSession;
using detail::RepositoryPtr;
using detail::SignaturePtr;
using detail::StatusListPtr;
using detail::TreePtr;

namespace fs = std::filesystem;

constexpr const char* kHeadsPrefix = "refs/heads/";

std::string oidHex(const git_oid& oid) {
  char hex[GIT_OID_HEXSZ + 1];
  git_oid_tostr(hex, sizeof hex, &oid);
  return hex;
}

bool isValidBranchName(const std::string& branch) {
  detail::ensureLibgit2();
  int valid = 0;
  const std::string ref = kHeadsPrefix + branch;
  return git_reference_name_is_valid(&valid, ref.c_str()) == 0 && valid != 0;
}

// Puts a failed clone's target back the way it was found: removed when the
// clone created it, emptied when it was an empty directory.
class CloneTargetGuard {
 public:
  CloneTargetGuard(fs::path dir, bool existed) : dir_(std::move(dir)), existed_(existed) {}
  ~CloneTargetGuard() {
    if (committed_) return;
    std::error_code ec;
    if (!existed_) {
      fs::remove_all(dir_, ec);
      return;
    }
    for (const auto& entry : fs::directory_iterator(dir_, ec)) fs::remove_all(entry.path(), ec);
  }
  void commit() { committed_ = true; }

 private:
  fs::path dir_;
  bool existed_;
  bool committed_ = false;
};

// HEAD's commit, or nullptr (and ok) on an unborn branch.
Result<CommitPtr> headCommit(git_repository* repo) {
  git_oid oid;
  const int rc = git_reference_name_to_id(&oid, repo, "HEAD");
  if (rc == GIT_ENOTFOUND || rc == GIT_EUNBORNBRANCH) return CommitPtr();
  if (rc < 0) return gitError(ErrorCode::kInternal, "resolving HEAD", rc);
  git_commit* commit = nullptr;
  if (const int lrc = git_commit_lookup(&commit, repo, &oid); lrc < 0) {
    return gitError(ErrorCode::kInternal, "reading HEAD's commit", lrc);
  }
  return CommitPtr(commit);
}

// Whether the work tree file `path` has exactly the content and mode of
// `entry` (a HEAD-side diff file).
bool workdirMatches(git_repository* repo, const std::string& path, const git_diff_file& head) {
  const char* workdir = git_repository_workdir(repo);
  if (workdir == nullptr) return false;
  const fs::path full = fs::path(workdir) / path;
  std::error_code ec;
  const auto st = fs::symlink_status(full, ec);
  if (ec || !(fs::is_regular_file(st) || fs::is_symlink(st))) return false;
  if (fs::is_symlink(st) != (head.mode == GIT_FILEMODE_LINK)) return false;
  if (fs::is_regular_file(st)) {
    const bool exec = (st.permissions() & fs::perms::owner_exec) != fs::perms::none;
    if (exec != (head.mode == GIT_FILEMODE_BLOB_EXECUTABLE)) return false;
  }
  git_oid oid;
  // Hashed with the repository's filters (e.g. CRLF), as `git add` would.
  if (git_repository_hashfile(&oid, repo, full.c_str(), GIT_OBJECT_BLOB, path.c_str()) < 0) {
    return false;
  }
  return git_oid_equal(&oid, &head.id) != 0;
}

}  // namespace

Result<void> cloneRepository(const CloneOptions& o) {
  detail::ensureLibgit2();
  if (o.url.empty()) return makeError(ErrorCode::kInvalidArgument, "clone: the URL is empty");
  if (o.dir.empty()) return makeError(ErrorCode::kInvalidArgument, "clone: the directory is empty");

  if (auto plain = detail::checkPlainUrl(o.url, "clone"); !plain.ok()) return plain.error();
  if (!o.branch.empty() && !isValidBranchName(o.branch)) {
    return makeError(ErrorCode::kInvalidArgument, "clone: invalid branch name '" + o.branch + "'");
  }

  std::error_code ec;
  const fs::path dir(o.dir);
  const bool existed = fs::exists(dir, ec);
  if (existed && (!fs::is_directory(dir, ec) || !fs::is_empty(dir, ec))) {
    return makeError(ErrorCode::kConflict, "clone: " + o.dir + " exists and is not empty");
  }
  RemoteSession session(o.url, o.remote);
  const std::string operation = "clone of " + o.url;
  if (session.isCancelled()) return makeError(ErrorCode::kCancelled, operation + " was cancelled");

  CloneTargetGuard guard(dir, existed);  // destroyed after the libgit2 handles below
  git_repository_init_options init = GIT_REPOSITORY_INIT_OPTIONS_INIT;
  init.flags = GIT_REPOSITORY_INIT_MKPATH | GIT_REPOSITORY_INIT_NO_REINIT;
  if (!o.branch.empty()) init.initial_head = o.branch.c_str();
  git_repository* raw_repo = nullptr;
  if (const int rc = git_repository_init_ext(&raw_repo, o.dir.c_str(), &init); rc < 0) {
    return gitError(ErrorCode::kInternal, "clone: creating a repository in " + o.dir, rc);
  }
  RepositoryPtr repo(raw_repo);

  // origin is written with the plain URL; credentials never go into config.
  git_remote* raw_remote = nullptr;
  if (const int rc = git_remote_create(&raw_remote, repo.get(), "origin", o.url.c_str()); rc < 0) {
    return gitError(ErrorCode::kInvalidArgument, operation, rc);
  }
  RemotePtr remote(raw_remote);

  // Connect first to see the remote's branches: an empty remote and a
  // missing branch are told apart before anything is downloaded.
  git_remote_callbacks callbacks = session.callbacks();
  if (const int rc =
          git_remote_connect(remote.get(), GIT_DIRECTION_FETCH, &callbacks, nullptr, nullptr);
      rc < 0) {
    return session.remoteError(rc, operation);
  }
  const git_remote_head** heads = nullptr;
  size_t head_count = 0;
  if (const int rc = git_remote_ls(&heads, &head_count, remote.get()); rc < 0) {
    return session.remoteError(rc, operation);
  }
  bool has_branches = false;
  for (size_t i = 0; i < head_count; ++i) {
    if (std::string_view(heads[i]->name).rfind(kHeadsPrefix, 0) == 0) has_branches = true;
  }
  if (!has_branches) {
    // An empty remote: HEAD already names the unborn `branch` (init above).
    git_remote_disconnect(remote.get());
    guard.commit();
    return {};
  }

  std::string branch = o.branch;
  if (branch.empty()) {
    git_buf default_ref = GIT_BUF_INIT;
    const int rc = git_remote_default_branch(&default_ref, remote.get());
    if (rc < 0) {
      return makeError(ErrorCode::kNotFound,
                       "clone: " + o.url + " has no default branch; name the branch");
    }
    branch = std::string(default_ref.ptr).substr(std::string_view(kHeadsPrefix).size());
    git_buf_dispose(&default_ref);
  }
  const std::string remote_ref = kHeadsPrefix + branch;
  bool found = false;
  for (size_t i = 0; i < head_count; ++i) found = found || remote_ref == heads[i]->name;
  if (!found) {
    git_remote_disconnect(remote.get());
    return makeError(ErrorCode::kNotFound, "branch " + branch + " does not exist in " + o.url);
  }

  // Only the branch to build, with its full history and the tags on it.
  // libgit2 1.5 cannot clone shallowly (depth arrived in 1.7), so this is a
  // full fetch of that branch.
  const std::string tracking_ref = "refs/remotes/origin/" + branch;
  std::string refspec = "+" + remote_ref + ":" + tracking_ref;
  char* refspec_ptr = refspec.data();
  const git_strarray refspecs = {&refspec_ptr, 1};
  git_fetch_options fetch = GIT_FETCH_OPTIONS_INIT;
  fetch.callbacks = callbacks;
  fetch.update_fetchhead = 0;
  const std::string reflog = "clone: from " + o.url;
  if (const int rc = git_remote_fetch(remote.get(), &refspecs, &fetch, reflog.c_str()); rc < 0) {
    return session.remoteError(rc, operation);
  }

  git_oid tip;
  if (const int rc = git_reference_name_to_id(&tip, repo.get(), tracking_ref.c_str()); rc < 0) {
    return gitError(ErrorCode::kInternal, operation + ": reading " + tracking_ref, rc);
  }
  git_commit* raw_commit = nullptr;
  if (const int rc = git_commit_lookup(&raw_commit, repo.get(), &tip); rc < 0) {
    return gitError(ErrorCode::kInternal, operation + ": reading the tip of " + branch, rc);
  }
  CommitPtr commit(raw_commit);
  git_reference* raw_branch = nullptr;
  if (const int rc = git_branch_create(&raw_branch, repo.get(), branch.c_str(), commit.get(), 0);
      rc < 0) {
    return gitError(ErrorCode::kInternal, operation + ": creating branch " + branch, rc);
  }
  ReferencePtr local(raw_branch);
  const std::string upstream = "origin/" + branch;
  if (const int rc = git_branch_set_upstream(local.get(), upstream.c_str()); rc < 0) {
    return gitError(ErrorCode::kInternal, operation + ": tracking " + upstream, rc);
  }
  if (const int rc = git_repository_set_head(repo.get(), git_reference_name(local.get())); rc < 0) {
    return gitError(ErrorCode::kInternal, operation + ": checking out " + branch, rc);
  }
  git_checkout_options checkout = GIT_CHECKOUT_OPTIONS_INIT;
  // The work tree holds nothing but .git: write every file of HEAD.
  checkout.checkout_strategy = GIT_CHECKOUT_FORCE;
  if (const int rc = git_checkout_head(repo.get(), &checkout); rc < 0) {
    return gitError(ErrorCode::kInternal, operation + ": checking out " + branch, rc);
  }
  guard.commit();
  return {};
}

Result<std::vector<FileChange>> detectChanges(const std::string& dir) {
  auto repo = detail::openRepository(dir);
  if (!repo.ok()) return repo.error();

  git_status_options opts = GIT_STATUS_OPTIONS_INIT;
  opts.show = GIT_STATUS_SHOW_INDEX_AND_WORKDIR;
  opts.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_RECURSE_UNTRACKED_DIRS;
  git_status_list* raw = nullptr;
  if (const int rc = git_status_list_new(&raw, repo->get(), &opts); rc < 0) {
    return gitError(ErrorCode::kInternal, "detecting changes in " + dir, rc);
  }
  StatusListPtr list(raw);

  // Each entry is HEAD->index plus index->work tree; what counts is HEAD
  // against the work tree, whatever the index says in between.
  std::vector<FileChange> changes;
  const size_t count = git_status_list_entrycount(list.get());
  for (size_t i = 0; i < count; ++i) {
    const git_status_entry* e = git_status_byindex(list.get(), i);
    const unsigned s = e->status;
    const git_diff_delta* delta = e->head_to_index ? e->head_to_index : e->index_to_workdir;
    if (delta == nullptr) continue;
    const std::string path =
        delta->old_file.path != nullptr ? delta->old_file.path : delta->new_file.path;

    const char* change = nullptr;
    if (s & GIT_STATUS_INDEX_NEW) {
      change = (s & GIT_STATUS_WT_DELETED) ? nullptr : "added";
    } else if (s & GIT_STATUS_WT_NEW) {
      if (s & GIT_STATUS_INDEX_DELETED) {
        // Removed from the index only: a change only if the file differs.
        change =
            workdirMatches(repo->get(), path, e->head_to_index->old_file) ? nullptr : "modified";
      } else {
        change = "added";
      }
    } else if (s & (GIT_STATUS_INDEX_DELETED | GIT_STATUS_WT_DELETED)) {
      change = "deleted";
    } else if ((s & GIT_STATUS_INDEX_MODIFIED) && (s & GIT_STATUS_WT_MODIFIED)) {
      // Staged, then changed back: compare with HEAD itself.
      change = workdirMatches(repo->get(), path, e->head_to_index->old_file) ? nullptr : "modified";
    } else if (s != GIT_STATUS_CURRENT && (s & GIT_STATUS_IGNORED) == 0) {
      change = "modified";
    }
    if (change != nullptr) changes.push_back({path, change});
  }
  std::sort(changes.begin(), changes.end(),
            [](const FileChange& a, const FileChange& b) { return a.path < b.path; });
  return changes;
}

Result<std::string> commitAll(const CommitOptions& o) {
  if (o.message.empty()) {
    return makeError(ErrorCode::kInvalidArgument, "commit: the message is empty");
  }
  auto repo = detail::openRepository(o.dir);
  if (!repo.ok()) return repo.error();
  git_repository* r = repo->get();

  git_index* raw_index = nullptr;
  if (const int rc = git_repository_index(&raw_index, r); rc < 0) {
    return gitError(ErrorCode::kInternal, "commit: reading the index of " + o.dir, rc);
  }
  IndexPtr index(raw_index);
  // add_all picks up new and modified files (ignored ones stay out);
  // update_all drops the entries of deleted files.
  if (const int rc =
          git_index_add_all(index.get(), nullptr, GIT_INDEX_ADD_DEFAULT, nullptr, nullptr);
      rc < 0) {
    return gitError(ErrorCode::kInternal, "commit: staging the changes in " + o.dir, rc);
  }
  if (const int rc = git_index_update_all(index.get(), nullptr, nullptr, nullptr); rc < 0) {
    return gitError(ErrorCode::kInternal, "commit: staging the deletions in " + o.dir, rc);
  }
  if (const int rc = git_index_write(index.get()); rc < 0) {
    return gitError(ErrorCode::kInternal, "commit: writing the index of " + o.dir, rc);
  }
  git_oid tree_id;
  if (const int rc = git_index_write_tree(&tree_id, index.get()); rc < 0) {
    return gitError(ErrorCode::kInternal, "commit: writing the tree of " + o.dir, rc);
  }
  git_tree* raw_tree = nullptr;
  if (const int rc = git_tree_lookup(&raw_tree, r, &tree_id); rc < 0) {
    return gitError(ErrorCode::kInternal, "commit: reading the new tree", rc);
  }
  TreePtr tree(raw_tree);

  auto parent = headCommit(r);
  if (!parent.ok()) return parent.error();
  const bool unchanged = *parent ? git_oid_equal(git_commit_tree_id(parent->get()), &tree_id) != 0
                                 : git_tree_entrycount(tree.get()) == 0;
  if (unchanged) return makeError(ErrorCode::kConflict, "nothing to commit in " + o.dir);

  git_signature* raw_sig = nullptr;
  int sig_rc = 0;
  if (!o.author_name.empty() && !o.author_email.empty()) {
    sig_rc = git_signature_now(&raw_sig, o.author_name.c_str(), o.author_email.c_str());
  } else {
    sig_rc = git_signature_default(&raw_sig, r);
  }
  if (sig_rc < 0) {
    return gitError(ErrorCode::kInvalidArgument,
                    "commit: no usable author (set author_name and author_email)", sig_rc);
  }
  SignaturePtr sig(raw_sig);

  git_buf message = GIT_BUF_INIT;
  // git's cleanup without stripping '#' lines: a message is used as given.
  if (const int rc = git_message_prettify(&message, o.message.c_str(), 0, '#'); rc < 0) {
    return gitError(ErrorCode::kInvalidArgument, "commit: the message", rc);
  }
  const std::string cleaned(message.ptr, message.size);
  git_buf_dispose(&message);
  if (cleaned.empty()) {
    return makeError(ErrorCode::kInvalidArgument, "commit: the message is empty");
  }

  const git_commit* parents[1] = {parent->get()};
  git_oid commit_id;
  // "HEAD" moves the current branch, and creates it when it is unborn.
  if (const int rc = git_commit_create(&commit_id, r, "HEAD", sig.get(), sig.get(), nullptr,
                                       cleaned.c_str(), tree.get(), *parent ? 1 : 0, parents);
      rc < 0) {
    return gitError(ErrorCode::kInternal, "commit in " + o.dir, rc);
  }
  return oidHex(commit_id);
}

Result<void> push(const PushOptions& o) {
  if (o.url.empty()) return makeError(ErrorCode::kInvalidArgument, "push: the URL is empty");
  if (o.local_branch.empty()) {
    return makeError(ErrorCode::kInvalidArgument, "push: the local branch is empty");
  }
  if (auto plain = detail::checkPlainUrl(o.url, "push"); !plain.ok()) return plain.error();
  const std::string remote_branch = o.remote_branch.empty() ? o.local_branch : o.remote_branch;
  if (!isValidBranchName(remote_branch)) {
    return makeError(ErrorCode::kInvalidArgument,
                     "push: invalid branch name '" + remote_branch + "'");
  }
  auto repo = detail::openRepository(o.dir);
  if (!repo.ok()) return repo.error();
  git_repository* r = repo->get();

  const std::string local_ref = kHeadsPrefix + o.local_branch;
  git_oid local_tip;
  if (git_reference_name_to_id(&local_tip, r, local_ref.c_str()) < 0) {
    return makeError(ErrorCode::kNotFound,
                     "push: branch " + o.local_branch + " does not exist in " + o.dir);
  }

  RemoteSession session(o.url, o.remote);
  const std::string operation = "push to " + o.url;
  if (session.isCancelled()) return makeError(ErrorCode::kCancelled, operation + " was cancelled");

  // Anonymous: nothing about this remote (URL included) goes into config.
  git_remote* raw_remote = nullptr;
  if (const int rc = git_remote_create_anonymous(&raw_remote, r, o.url.c_str()); rc < 0) {
    return gitError(ErrorCode::kInvalidArgument, operation, rc);
  }
  RemotePtr remote(raw_remote);

  std::string refspec = local_ref + ":" + kHeadsPrefix + remote_branch;  // never forced
  char* refspec_ptr = refspec.data();
  const git_strarray refspecs = {&refspec_ptr, 1};
  git_push_options opts = GIT_PUSH_OPTIONS_INIT;
  opts.callbacks = session.callbacks();
  const int rc = git_remote_push(remote.get(), &refspecs, &opts);
  const std::string rejected = "push to " + remote_branch + " rejected: ";
  if (rc == GIT_ENONFASTFORWARD) {
    // libgit2 checks fast-forward itself before uploading anything.
    return makeError(ErrorCode::kFailed, rejected + "non-fast-forward: " +
                                             session.redact(detail::lastErrorMessage(rc)));
  }
  if (rc < 0) return session.remoteError(rc, operation);
  if (!session.rejections().empty()) {
    std::string reasons;
    for (const auto& [ref, reason] : session.rejections()) {
      if (!reasons.empty()) reasons += "; ";
      reasons += session.redact(reason);
    }
    const std::string server = session.serverMessages();
    if (!server.empty()) reasons += " (server: " + server + ")";
    return makeError(ErrorCode::kFailed, rejected + reasons);
  }
  return {};
}

Result<std::string> headSha(const std::string& dir) {
  auto repo = detail::openRepository(dir, /*allow_bare=*/true);
  if (!repo.ok()) return repo.error();
  auto commit = headCommit(repo->get());
  if (!commit.ok()) return commit.error();
  if (!*commit) return makeError(ErrorCode::kNotFound, "HEAD of " + dir + " has no commits yet");
  return oidHex(*git_commit_id(commit->get()));
}

Result<void> createBranch(const std::string& dir, const std::string& name) {
  auto repo = detail::openRepository(dir);
  if (!repo.ok()) return repo.error();
  if (git_reference_is_valid_name(("refs/heads/" + name).c_str()) != 1) {
    return makeError(ErrorCode::kInvalidArgument, "\"" + name + "\" is not a valid branch name");
  }
  auto commit = headCommit(repo->get());
  if (!commit.ok()) return commit.error();
  if (!*commit) {
    // Unborn HEAD: the new branch is simply the unborn one.
    const int rc = git_repository_set_head(repo->get(), ("refs/heads/" + name).c_str());
    if (rc != 0) return detail::gitError(ErrorCode::kInternal, "switching to branch " + name, rc);
    return {};
  }
  git_reference* ref = nullptr;
  int rc = git_branch_create(&ref, repo->get(), name.c_str(), commit->get(), /*force=*/0);
  if (rc == GIT_EEXISTS) {
    return makeError(ErrorCode::kConflict, "branch " + name + " already exists in " + dir);
  }
  if (rc != 0) return detail::gitError(ErrorCode::kInternal, "creating branch " + name, rc);
  git_reference_free(ref);
  rc = git_repository_set_head(repo->get(), ("refs/heads/" + name).c_str());
  if (rc != 0) return detail::gitError(ErrorCode::kInternal, "switching to branch " + name, rc);
  return {};
}

}  // namespace kiln::git
