// kiln::git against real git. The git CLI builds the repositories and is the
// independent judge of what kiln_git did: clones from file:// remotes and from
// a real smart-HTTP server (git http-backend behind lighttpd, token auth),
// commits, and pushes that are accepted or rejected by real receive-packs.
#include "kiln/git/workspace.h"

#include <git2.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "git_http_server.h"
#include "subprocess.h"

namespace kiln::git {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Neither the git CLI nor libgit2 may read the machine's own configuration
// (a global user.name, init.defaultBranch, url rewrites): HOME is a scratch
// folder for the whole test binary, set before libgit2 first looks at it.
struct ScratchHome {
  ScratchHome() {
    char tmpl[] = "/tmp/kiln-git-home-XXXXXX";
    path = mkdtemp(tmpl);
    setenv("HOME", path.c_str(), 1);
    setenv("XDG_CONFIG_HOME", (path + "/.config").c_str(), 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    setenv("GIT_TERMINAL_PROMPT", "0", 1);
  }
  ~ScratchHome() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string path;
};
const ScratchHome kHome;

const std::map<std::string, std::string> kCliEnv = {
    {"GIT_AUTHOR_NAME", "Someone Else"},
    {"GIT_AUTHOR_EMAIL", "else@example.test"},
    {"GIT_COMMITTER_NAME", "Someone Else"},
    {"GIT_COMMITTER_EMAIL", "else@example.test"},
    {"HOME", kHome.path},
};

testing::RunResult gitRun(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/git"};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::run(argv, kCliEnv);
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// Runs git; a non-zero exit fails the test. Returns stdout without the final
// newline.
std::string git(const std::vector<std::string>& args) {
  const testing::RunResult r = gitRun(args);
  std::string cmd;
  for (const auto& a : args) cmd += " " + a;
  EXPECT_EQ(r.code, 0) << "git" << cmd << " failed: " << r.err;
  return trimmed(r.out);
}

void writeFile(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << content;
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every file under `dir` whose bytes contain `needle`.
std::vector<std::string> filesContaining(const fs::path& dir, const std::string& needle) {
  std::vector<std::string> hits;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && readFile(e.path()).find(needle) != std::string::npos) {
      hits.push_back(e.path().string());
    }
  }
  return hits;
}

std::string fileUrl(const fs::path& p) {
  return "file://" + p.string();
}

std::vector<std::pair<std::string, std::string>> pairs(const std::vector<FileChange>& changes) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& c : changes) out.emplace_back(c.path, c.change);
  return out;
}

using Pair = std::pair<std::string, std::string>;

class GitWorkspaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln-git-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }

  fs::path path(const std::string& name) const { return tmp_ / name; }

  // A work-tree repository with history: three commits on main, then a
  // branch `feature` with two more (one adds nested folders).
  fs::path makeSourceRepository() {
    const fs::path src = path("src");
    git({"init", "--quiet", "-b", "main", src.string()});
    for (int i = 1; i <= 3; ++i) {
      writeFile(src / "README.md", "version " + std::to_string(i) + "\n");
      git({"-C", src.string(), "add", "-A"});
      git({"-C", src.string(), "commit", "--quiet", "-m", "main " + std::to_string(i)});
    }
    git({"-C", src.string(), "checkout", "--quiet", "-b", "feature"});
    writeFile(src / "lib/deep/code.txt", "feature code\n");
    git({"-C", src.string(), "add", "-A"});
    git({"-C", src.string(), "commit", "--quiet", "-m", "feature 1"});
    writeFile(src / "README.md", "feature readme\n");
    git({"-C", src.string(), "commit", "--quiet", "-am", "feature 2"});
    git({"-C", src.string(), "checkout", "--quiet", "main"});
    return src;
  }

  // A bare repository whose main holds `files` in one commit.
  fs::path makeBareWithFiles(const std::string& name,
                             const std::map<std::string, std::string>& files) {
    const fs::path bare = path(name + ".git");
    const fs::path seed = path(name + "-seed");
    git({"init", "--quiet", "--bare", "-b", "main", bare.string()});
    git({"init", "--quiet", "-b", "main", seed.string()});
    for (const auto& [file, content] : files) writeFile(seed / file, content);
    git({"-C", seed.string(), "add", "-A"});
    git({"-C", seed.string(), "commit", "--quiet", "-m", "initial"});
    git({"-C", seed.string(), "push", "--quiet", bare.string(), "main"});
    return bare;
  }

  fs::path cloneOf(const std::string& url, const std::string& name,
                   const std::string& branch = "main") {
    const fs::path dir = path(name);
    auto r = cloneRepository({url, branch, dir.string(), {}});
    EXPECT_TRUE(r.ok()) << r.error().message;
    return dir;
  }

  fs::path tmp_;
};

CommitOptions commitIn(const fs::path& dir, const std::string& message) {
  return {dir.string(), message, "Kiln Bot", "bot@kiln.test"};
}

// ---- clone ----

TEST_F(GitWorkspaceTest, ClonesAFileRemoteWithHistoryAtABranch) {
  const fs::path src = makeSourceRepository();
  const fs::path dir = path("clone");
  const std::string url = fileUrl(src);

  auto r = cloneRepository({url, "feature", dir.string(), {}});
  ASSERT_TRUE(r.ok()) << r.error().message;

  const std::string expected = git({"-C", src.string(), "rev-parse", "feature"});
  auto sha = headSha(dir.string());
  ASSERT_TRUE(sha.ok()) << sha.error().message;
  EXPECT_EQ(*sha, expected);
  EXPECT_EQ(git({"-C", dir.string(), "rev-parse", "HEAD"}), expected);
  EXPECT_EQ(git({"-C", dir.string(), "symbolic-ref", "HEAD"}), "refs/heads/feature");
  EXPECT_EQ(git({"-C", dir.string(), "rev-list", "--count", "HEAD"}), "5");  // full history
  EXPECT_EQ(git({"-C", dir.string(), "rev-parse", "--abbrev-ref", "feature@{upstream}"}),
            "origin/feature");
  EXPECT_EQ(git({"-C", dir.string(), "config", "remote.origin.url"}), url);
  EXPECT_EQ(git({"-C", dir.string(), "status", "--porcelain"}), "");  // fully checked out
  EXPECT_EQ(readFile(dir / "README.md"), "feature readme\n");
  EXPECT_EQ(readFile(dir / "lib/deep/code.txt"), "feature code\n");
}

TEST_F(GitWorkspaceTest, ClonesTheDefaultBranchWhenNoneIsNamed) {
  const fs::path src = makeSourceRepository();  // its HEAD is main
  const fs::path dir = path("clone");
  auto r = cloneRepository({fileUrl(src), "", dir.string(), {}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(git({"-C", dir.string(), "symbolic-ref", "HEAD"}), "refs/heads/main");
  EXPECT_EQ(git({"-C", dir.string(), "rev-parse", "HEAD"}),
            git({"-C", src.string(), "rev-parse", "main"}));
  EXPECT_EQ(readFile(dir / "README.md"), "version 3\n");
}

TEST_F(GitWorkspaceTest, ClonesAnEmptyRemoteAsAnUnbornBranch) {
  const fs::path bare = path("empty.git");
  git({"init", "--quiet", "--bare", "-b", "master", bare.string()});
  const fs::path dir = path("clone");
  const std::string url = fileUrl(bare);

  auto r = cloneRepository({url, "trunk", dir.string(), {}});
  ASSERT_TRUE(r.ok()) << r.error().message;

  EXPECT_EQ(git({"-C", dir.string(), "symbolic-ref", "HEAD"}), "refs/heads/trunk");
  EXPECT_NE(gitRun({"-C", dir.string(), "rev-parse", "--verify", "--quiet", "HEAD"}).code, 0);
  EXPECT_EQ(git({"-C", dir.string(), "config", "remote.origin.url"}), url);
  auto sha = headSha(dir.string());
  ASSERT_FALSE(sha.ok());
  EXPECT_EQ(sha.error().code, ErrorCode::kNotFound);
}

TEST_F(GitWorkspaceTest, MissingBranchIsNotFoundAndLeavesNothingBehind) {
  const fs::path src = makeSourceRepository();
  const fs::path dir = path("clone");
  const std::string url = fileUrl(src);

  auto r = cloneRepository({url, "nope", dir.string(), {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(r.error().message, "branch nope does not exist in " + url);
  EXPECT_FALSE(r.error().retryable);
  EXPECT_FALSE(fs::exists(dir));
}

TEST_F(GitWorkspaceTest, AnInvalidBranchNameIsRefused) {
  const fs::path src = makeSourceRepository();
  auto r = cloneRepository({fileUrl(src), "bad..name", path("clone").string(), {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(path("clone")));
}

TEST_F(GitWorkspaceTest, UnreachableRemoteIsUnavailableAndRetryable) {
  const fs::path dir = path("clone");
  fs::create_directories(dir);  // an existing empty target stays, empty
  int asked = 0;
  RemoteOptions remote;
  remote.credentials = [&](const std::string&, unsigned) -> Result<Credentials> {
    ++asked;
    return Credentials{Credentials::Type::kUserPass, "x-access-token", "tok", "", "", ""};
  };
  auto r = cloneRepository({"http://127.0.0.1:1/x.git", "main", dir.string(), remote});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << r.error().message;
  EXPECT_TRUE(r.error().retryable);
  EXPECT_THAT(r.error().message, HasSubstr("clone of http://127.0.0.1:1/x.git"));
  EXPECT_EQ(asked, 0);
  EXPECT_TRUE(fs::exists(dir));
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST_F(GitWorkspaceTest, AMissingLocalRepositoryIsNotFound) {
  fs::create_directories(path("not-a-repo"));
  for (const std::string& url :
       {fileUrl(path("nowhere.git")), path("nowhere.git").string(), fileUrl(path("not-a-repo"))}) {
    auto r = cloneRepository({url, "main", path("clone").string(), {}});
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.error().code, ErrorCode::kNotFound) << r.error().message;
    EXPECT_FALSE(r.error().retryable);
    EXPECT_FALSE(fs::exists(path("clone")));
  }
}

TEST_F(GitWorkspaceTest, AUrlCarryingAPasswordIsRefused) {
  const std::string url = "http://x-access-token:s3cr3t-token@127.0.0.1:1/x.git";
  auto r = cloneRepository({url, "main", path("clone").string(), {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(r.error().message, HasSubstr("http://x-access-token:***@127.0.0.1:1/x.git"));
  EXPECT_THAT(r.error().message, Not(HasSubstr("s3cr3t")));
  EXPECT_FALSE(fs::exists(path("clone")));

  const fs::path bare = makeBareWithFiles("proj", {{"a.txt", "a\n"}});
  const fs::path dir = cloneOf(fileUrl(bare), "ok");
  auto p = push({dir.string(), url, "main", "main", {}});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(p.error().message, Not(HasSubstr("s3cr3t")));
}

TEST_F(GitWorkspaceTest, RefusesANonEmptyTarget) {
  const fs::path src = makeSourceRepository();
  const fs::path dir = path("clone");
  writeFile(dir / "precious.txt", "keep me\n");
  auto r = cloneRepository({fileUrl(src), "main", dir.string(), {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kConflict);
  EXPECT_EQ(readFile(dir / "precious.txt"), "keep me\n");
  EXPECT_FALSE(fs::exists(dir / ".git"));
}

TEST_F(GitWorkspaceTest, CancellationAbortsAClone) {
  std::map<std::string, std::string> files;
  for (int i = 0; i < 200; ++i) {
    files["f/" + std::to_string(i) + ".txt"] = std::string(1000, static_cast<char>('a' + i % 26));
  }
  const fs::path bare = makeBareWithFiles("big", files);
  const fs::path dir = path("clone");
  std::atomic<int> polls{0};
  RemoteOptions remote;
  // Not cancelled when the clone starts; cancelled from the first poll on
  // inside the transfer, so it is libgit2's progress callback that aborts.
  remote.cancelled = [&] { return ++polls > 1; };
  auto r = cloneRepository({fileUrl(bare), "main", dir.string(), remote});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCancelled) << r.error().message;
  EXPECT_GE(polls.load(), 2);
  EXPECT_FALSE(fs::exists(dir));

  // The same clone without cancellation succeeds: the abort was ours.
  auto again = cloneRepository({fileUrl(bare), "main", dir.string(), {}});
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(readFile(dir / "f/7.txt"), files["f/7.txt"]);
}

// ---- detect changes ----

TEST_F(GitWorkspaceTest, DetectsAddedModifiedAndDeletedFilesExactly) {
  const fs::path bare = makeBareWithFiles("proj", {{".gitignore", "*.log\nbuild/\n"},
                                                   {"a.txt", "a\n"},
                                                   {"keep.txt", "keep\n"},
                                                   {"unstaged.txt", "u\n"},
                                                   {"del.txt", "bye\n"},
                                                   {"dir/sub/b.txt", "b\n"},
                                                   {"dir/gone.txt", "gone\n"}});
  const fs::path dir = cloneOf(fileUrl(bare), "clone");
  auto clean = detectChanges(dir.string());
  ASSERT_TRUE(clean.ok()) << clean.error().message;
  EXPECT_TRUE(clean->empty());

  writeFile(dir / "a.txt", "a changed\n");
  writeFile(dir / "dir/sub/b.txt", "b changed\n");
  fs::remove(dir / "del.txt");
  fs::remove(dir / "dir/gone.txt");
  writeFile(dir / "new.txt", "new\n");
  writeFile(dir / "dir/sub/deeper/c.txt", "c\n");  // inside a new untracked folder
  writeFile(dir / "newdir/x/y.txt", "y\n");
  writeFile(dir / "debug.log", "ignored\n");
  writeFile(dir / "build/out.bin", "ignored\n");
  writeFile(dir / "dir/sub/trace.log", "ignored\n");
  // The index must not matter: staged then changed again, staged then
  // deleted, removed from the index only.
  writeFile(dir / "staged.txt", "one\n");
  git({"-C", dir.string(), "add", "staged.txt"});
  writeFile(dir / "staged.txt", "two\n");
  writeFile(dir / "ephemeral.txt", "short-lived\n");
  git({"-C", dir.string(), "add", "ephemeral.txt"});
  fs::remove(dir / "ephemeral.txt");
  git({"-C", dir.string(), "rm", "--quiet", "--cached", "keep.txt"});
  writeFile(dir / "unstaged.txt", "staged version\n");
  git({"-C", dir.string(), "add", "unstaged.txt"});
  writeFile(dir / "unstaged.txt", "u\n");  // back to HEAD's content

  auto changes = detectChanges(dir.string());
  ASSERT_TRUE(changes.ok()) << changes.error().message;
  EXPECT_THAT(pairs(*changes),
              ElementsAre(Pair{"a.txt", "modified"}, Pair{"del.txt", "deleted"},
                          Pair{"dir/gone.txt", "deleted"}, Pair{"dir/sub/b.txt", "modified"},
                          Pair{"dir/sub/deeper/c.txt", "added"}, Pair{"new.txt", "added"},
                          Pair{"newdir/x/y.txt", "added"}, Pair{"staged.txt", "added"}));

  // What commitAll records is exactly that list, as git sees it.
  auto sha = commitAll(commitIn(dir, "change things"));
  ASSERT_TRUE(sha.ok()) << sha.error().message;
  EXPECT_EQ(git({"-C", dir.string(), "show", "--name-status", "--format=", "HEAD"}),
            "M\ta.txt\nD\tdel.txt\nD\tdir/gone.txt\nM\tdir/sub/b.txt\nA\tdir/sub/deeper/c.txt\n"
            "A\tnew.txt\nA\tnewdir/x/y.txt\nA\tstaged.txt");
  auto after = detectChanges(dir.string());
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->empty());
}

TEST_F(GitWorkspaceTest, OnAnUnbornBranchEverythingIsAdded) {
  const fs::path bare = path("empty.git");
  git({"init", "--quiet", "--bare", bare.string()});
  const fs::path dir = cloneOf(fileUrl(bare), "clone");
  writeFile(dir / ".gitignore", "*.tmp\n");
  writeFile(dir / "src/main.c", "int main(void) { return 0; }\n");
  writeFile(dir / "README", "hi\n");
  writeFile(dir / "scratch.tmp", "ignored\n");

  auto changes = detectChanges(dir.string());
  ASSERT_TRUE(changes.ok()) << changes.error().message;
  EXPECT_THAT(pairs(*changes), ElementsAre(Pair{".gitignore", "added"}, Pair{"README", "added"},
                                           Pair{"src/main.c", "added"}));
}

TEST_F(GitWorkspaceTest, DetectChangesOutsideARepositoryIsNotFound) {
  fs::create_directories(path("plain"));
  auto changes = detectChanges(path("plain").string());
  ASSERT_FALSE(changes.ok());
  EXPECT_EQ(changes.error().code, ErrorCode::kNotFound);
}

// ---- commit ----

TEST_F(GitWorkspaceTest, CommitAllRecordsAuthorMessageAndTrailer) {
  const fs::path bare = makeBareWithFiles("proj", {{"a.txt", "a\n"}, {"old.txt", "old\n"}});
  const fs::path dir = cloneOf(fileUrl(bare), "clone");
  const std::string parent = git({"-C", dir.string(), "rev-parse", "HEAD"});
  writeFile(dir / "a.txt", "a2\n");
  writeFile(dir / "docs/new.md", "# new\n");
  fs::remove(dir / "old.txt");

  const std::string message = "Add a greeting\n\nWritten by the agent.\n\nKiln-Task: t-42";
  auto sha = commitAll(commitIn(dir, message));
  ASSERT_TRUE(sha.ok()) << sha.error().message;

  EXPECT_EQ(sha->size(), 40u);
  EXPECT_EQ(*sha, git({"-C", dir.string(), "rev-parse", "HEAD"}));
  EXPECT_EQ(git({"-C", dir.string(), "rev-parse", "HEAD^"}), parent);
  EXPECT_EQ(git({"-C", dir.string(), "symbolic-ref", "HEAD"}), "refs/heads/main");
  EXPECT_EQ(git({"-C", dir.string(), "log", "-1", "--format=%an <%ae>|%cn <%ce>"}),
            "Kiln Bot <bot@kiln.test>|Kiln Bot <bot@kiln.test>");
  // The raw commit object: headers, a blank line, then the message as given.
  const std::string raw = gitRun({"-C", dir.string(), "cat-file", "commit", "HEAD"}).out;
  EXPECT_THAT(raw, ::testing::EndsWith("\n\n" + message + "\n"));
  EXPECT_EQ(git({"-C", dir.string(), "log", "-1", "--format=%B"}), message);
  EXPECT_EQ(git({"-C", dir.string(), "log", "-1", "--format=%s"}), "Add a greeting");
  EXPECT_EQ(git({"-C", dir.string(), "log", "-1", "--format=%(trailers:key=Kiln-Task,valueonly)"}),
            "t-42");
  EXPECT_EQ(git({"-C", dir.string(), "status", "--porcelain"}), "");  // index matches
  EXPECT_EQ(git({"-C", dir.string(), "show", "--name-status", "--format=", "HEAD"}),
            "M\ta.txt\nA\tdocs/new.md\nD\told.txt");
  auto head = headSha(dir.string());
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, *sha);
}

TEST_F(GitWorkspaceTest, NothingToCommitIsAConflict) {
  const fs::path bare = makeBareWithFiles("proj", {{"a.txt", "a\n"}, {".gitignore", "*.log\n"}});
  const fs::path dir = cloneOf(fileUrl(bare), "clone");
  const std::string before = git({"-C", dir.string(), "rev-parse", "HEAD"});
  writeFile(dir / "only-ignored.log", "x\n");
  auto r = commitAll(commitIn(dir, "nothing"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kConflict);
  EXPECT_THAT(r.error().message, HasSubstr("nothing to commit"));
  EXPECT_EQ(git({"-C", dir.string(), "rev-parse", "HEAD"}), before);

  // Unborn and empty: nothing to commit either.
  const fs::path empty_bare = path("empty.git");
  git({"init", "--quiet", "--bare", empty_bare.string()});
  const fs::path empty = cloneOf(fileUrl(empty_bare), "empty-clone");
  auto e = commitAll(commitIn(empty, "nothing"));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, ErrorCode::kConflict);
}

TEST_F(GitWorkspaceTest, CommitOnAnUnbornBranchCreatesIt) {
  const fs::path bare = path("empty.git");
  git({"init", "--quiet", "--bare", bare.string()});
  const fs::path dir = cloneOf(fileUrl(bare), "clone", "kiln/t-7");
  writeFile(dir / "hello.txt", "hello\n");
  auto sha = commitAll(commitIn(dir, "First commit\n\nKiln-Task: t-7\n"));
  ASSERT_TRUE(sha.ok()) << sha.error().message;
  EXPECT_EQ(git({"-C", dir.string(), "rev-parse", "refs/heads/kiln/t-7"}), *sha);
  EXPECT_EQ(git({"-C", dir.string(), "rev-list", "--count", "HEAD"}), "1");
  EXPECT_EQ(git({"-C", dir.string(), "ls-tree", "--name-only", "HEAD"}), "hello.txt");
}

TEST_F(GitWorkspaceTest, CommitWithoutAuthorUsesTheRepositoryIdentityOrFails) {
  const fs::path bare = makeBareWithFiles("proj", {{"a.txt", "a\n"}});
  const fs::path dir = cloneOf(fileUrl(bare), "clone");
  writeFile(dir / "a.txt", "changed\n");
  auto r = commitAll({dir.string(), "no author", "", ""});
  ASSERT_FALSE(r.ok());  // HOME is a scratch folder: no user.name anywhere
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);

  git({"-C", dir.string(), "config", "user.name", "Repo Person"});
  git({"-C", dir.string(), "config", "user.email", "repo@example.test"});
  auto ok = commitAll({dir.string(), "with the repo's identity", "", ""});
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(git({"-C", dir.string(), "log", "-1", "--format=%an <%ae>"}),
            "Repo Person <repo@example.test>");
}

// ---- push ----

TEST_F(GitWorkspaceTest, PushesToAFileRemote) {
  const fs::path bare = makeBareWithFiles("proj", {{"a.txt", "a\n"}});
  const std::string url = fileUrl(bare);
  const fs::path dir = cloneOf(url, "clone");
  writeFile(dir / "b.txt", "b\n");
  auto sha = commitAll(commitIn(dir, "Add b\n\nKiln-Task: t-1"));
  ASSERT_TRUE(sha.ok()) << sha.error().message;

  auto r = push({dir.string(), url, "main", "main", {}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  const std::string git_dir = "--git-dir=" + bare.string();
  EXPECT_EQ(git({git_dir, "log", "-1", "--format=%H %s", "main"}), *sha + " Add b");

  // To another branch name; the clone's config still knows only origin.
  auto to_task = push({dir.string(), url, "main", "kiln/t-1", {}});
  ASSERT_TRUE(to_task.ok()) << to_task.error().message;
  EXPECT_EQ(git({git_dir, "rev-parse", "refs/heads/kiln/t-1"}), *sha);
  EXPECT_EQ(
      git({"-C", dir.string(), "config", "--get-regexp", "^remote\\."}),
      "remote.origin.url " + url + "\nremote.origin.fetch +refs/heads/*:refs/remotes/origin/*");
}

TEST_F(GitWorkspaceTest, AnEmptyRemoteCanBeClonedCommittedAndPushed) {
  const fs::path bare = path("empty.git");
  git({"init", "--quiet", "--bare", "-b", "main", bare.string()});
  const std::string url = fileUrl(bare);
  const fs::path dir = cloneOf(url, "clone");
  writeFile(dir / "README.md", "# new project\n");
  auto sha = commitAll(commitIn(dir, "Initial commit"));
  ASSERT_TRUE(sha.ok()) << sha.error().message;
  auto r = push({dir.string(), url, "main", "", {}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(git({"--git-dir=" + bare.string(), "rev-parse", "main"}), *sha);
}

TEST_F(GitWorkspaceTest, NonFastForwardPushIsRejected) {
  const fs::path bare = makeBareWithFiles("proj", {{"a.txt", "a\n"}});
  const std::string url = fileUrl(bare);
  const fs::path dir = cloneOf(url, "clone");

  // Someone else pushes first.
  const fs::path other = path("other");
  git({"clone", "--quiet", bare.string(), other.string()});
  writeFile(other / "theirs.txt", "theirs\n");
  git({"-C", other.string(), "add", "-A"});
  git({"-C", other.string(), "commit", "--quiet", "-m", "theirs"});
  git({"-C", other.string(), "push", "--quiet", "origin", "main"});
  const std::string theirs = git({"-C", other.string(), "rev-parse", "HEAD"});

  writeFile(dir / "mine.txt", "mine\n");
  ASSERT_TRUE(commitAll(commitIn(dir, "mine")).ok());
  auto r = push({dir.string(), url, "main", "main", {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kFailed);
  EXPECT_FALSE(r.error().retryable);
  EXPECT_THAT(r.error().message, StartsWith("push to main rejected: non-fast-forward"));
  EXPECT_THAT(r.error().message, HasSubstr("not present locally"));
  EXPECT_EQ(git({"--git-dir=" + bare.string(), "rev-parse", "main"}), theirs);
}

TEST_F(GitWorkspaceTest, PushOfAMissingLocalBranchIsNotFound) {
  const fs::path bare = makeBareWithFiles("proj", {{"a.txt", "a\n"}});
  const fs::path dir = cloneOf(fileUrl(bare), "clone");
  auto r = push({dir.string(), fileUrl(bare), "nope", "main", {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound);
}

TEST_F(GitWorkspaceTest, ACancelledPushPushesNothing) {
  const fs::path bare = makeBareWithFiles("proj", {{"a.txt", "a\n"}});
  const std::string before = git({"--git-dir=" + bare.string(), "rev-parse", "main"});
  const fs::path dir = cloneOf(fileUrl(bare), "clone");
  writeFile(dir / "b.txt", "b\n");
  ASSERT_TRUE(commitAll(commitIn(dir, "b")).ok());
  RemoteOptions remote;
  remote.cancelled = [] { return true; };
  auto r = push({dir.string(), fileUrl(bare), "main", "main", remote});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCancelled);
  EXPECT_EQ(git({"--git-dir=" + bare.string(), "rev-parse", "main"}), before);
}

// ---- over smart HTTP with token auth ----

class GitHttpTest : public GitWorkspaceTest {
 protected:
  // Provider counting its calls; hands out `token` as the password.
  RemoteOptions tokenAuth(const std::string& token, int* calls, int max_attempts = 2) {
    RemoteOptions remote;
    remote.max_credential_attempts = max_attempts;
    remote.credentials = [this, token, calls](const std::string& url,
                                              unsigned allowed) -> Result<Credentials> {
      ++*calls;
      EXPECT_THAT(url, StartsWith(server_.baseUrl()));
      EXPECT_NE(allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT, 0u);
      Credentials c;
      c.type = Credentials::Type::kUserPass;
      c.username = testing::GitHttpServer::kUser;
      c.password = token;
      return c;
    };
    return remote;
  }

  // A served repository whose main holds one commit with README.md.
  std::string seededRepository(const std::string& name) {
    const std::string url = server_.createRepository(name);
    const fs::path seed = path(name + "-seed");
    git({"init", "--quiet", "-b", "main", seed.string()});
    writeFile(seed / "README.md", "served\n");
    git({"-C", seed.string(), "add", "-A"});
    git({"-C", seed.string(), "commit", "--quiet", "-m", "initial"});
    git({"-C", seed.string(), "push", "--quiet", server_.repositoryPath(name), "main"});
    git({"--git-dir=" + server_.repositoryPath(name), "symbolic-ref", "HEAD", "refs/heads/main"});
    return url;
  }

  void expectNoSecret(const std::string& text) {
    EXPECT_THAT(text, Not(HasSubstr(server_.token())));
    EXPECT_THAT(text, Not(HasSubstr(kWrongToken)));
  }

  static constexpr const char* kWrongToken = "kt_wrong_0123456789abcdef";
  testing::GitHttpServer server_;
};

TEST_F(GitHttpTest, TheRightTokenClonesAndPushes) {
  const std::string url = seededRepository("proj");
  const std::string bare = server_.repositoryPath("proj");
  int calls = 0;
  const fs::path dir = path("clone");

  auto r = cloneRepository({url, "main", dir.string(), tokenAuth(server_.token(), &calls)});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(calls, 1);  // asked once, then reused for the whole clone
  EXPECT_EQ(readFile(dir / "README.md"), "served\n");
  EXPECT_EQ(git({"-C", dir.string(), "rev-parse", "HEAD"}),
            git({"--git-dir=" + bare, "rev-parse", "main"}));

  writeFile(dir / "feature.txt", "over http\n");
  auto sha = commitAll(commitIn(dir, "Over HTTP\n\nKiln-Task: t-http"));
  ASSERT_TRUE(sha.ok()) << sha.error().message;
  calls = 0;
  auto p = push({dir.string(), url, "main", "kiln/t-http", tokenAuth(server_.token(), &calls)});
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_GE(calls, 1);
  EXPECT_LE(calls, 2);
  EXPECT_EQ(git({"--git-dir=" + bare, "log", "-1", "--format=%H %s", "kiln/t-http"}),
            *sha + " Over HTTP");

  // The token is nowhere in the workspace's git data; origin is the plain URL.
  EXPECT_EQ(git({"-C", dir.string(), "config", "remote.origin.url"}), url);
  EXPECT_THAT(readFile(dir / ".git/config"), Not(HasSubstr(server_.token())));
  EXPECT_THAT(filesContaining(dir, server_.token()), ::testing::IsEmpty());
}

TEST_F(GitHttpTest, AWrongTokenFailsPromptlyWithCappedAttempts) {
  const std::string url = seededRepository("proj");
  const fs::path dir = path("clone");
  int calls = 0;
  const auto start = std::chrono::steady_clock::now();
  auto r = cloneRepository({url, "main", dir.string(), tokenAuth(kWrongToken, &calls)});
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << r.error().message;
  EXPECT_FALSE(r.error().retryable);
  EXPECT_THAT(r.error().message, StartsWith("authentication to " + url + " failed: "));
  EXPECT_GE(calls, 1);
  EXPECT_LE(calls, 2);
  // lighttpd answers each failed login after a 1 s delay, so an uncapped
  // retry loop (libgit2 alone replays up to 15 times) would take far longer.
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  expectNoSecret(r.error().message);
  EXPECT_FALSE(fs::exists(dir));

  // One attempt allowed: the provider is asked exactly once.
  calls = 0;
  auto once = cloneRepository({url, "main", dir.string(), tokenAuth(kWrongToken, &calls, 1)});
  ASSERT_FALSE(once.ok());
  EXPECT_EQ(once.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(calls, 1);
}

TEST_F(GitHttpTest, AWrongTokenFailsAPushPromptly) {
  const std::string url = seededRepository("proj");
  const std::string bare = server_.repositoryPath("proj");
  const std::string before = git({"--git-dir=" + bare, "rev-parse", "main"});
  int calls = 0;
  const fs::path dir = path("clone");
  ASSERT_TRUE(
      cloneRepository({url, "main", dir.string(), tokenAuth(server_.token(), &calls)}).ok());
  writeFile(dir / "x.txt", "x\n");
  ASSERT_TRUE(commitAll(commitIn(dir, "x")).ok());

  calls = 0;
  const auto start = std::chrono::steady_clock::now();
  auto r = push({dir.string(), url, "main", "main", tokenAuth(kWrongToken, &calls)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << r.error().message;
  EXPECT_THAT(r.error().message, StartsWith("authentication to " + url + " failed: "));
  EXPECT_LE(calls, 2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  expectNoSecret(r.error().message);
  EXPECT_EQ(git({"--git-dir=" + bare, "rev-parse", "main"}), before);
  EXPECT_THAT(filesContaining(dir / ".git", kWrongToken), ::testing::IsEmpty());
}

TEST_F(GitHttpTest, AMissingServedRepositoryIsNotFound) {
  int calls = 0;
  const std::string url = server_.baseUrl() + "/missing.git";
  auto r =
      cloneRepository({url, "main", path("clone").string(), tokenAuth(server_.token(), &calls)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kNotFound) << r.error().message;
  EXPECT_FALSE(r.error().retryable);
  expectNoSecret(r.error().message);
}

TEST_F(GitHttpTest, NoCredentialsIsAnAuthenticationFailure) {
  const std::string url = seededRepository("proj");
  auto r = cloneRepository({url, "main", path("clone").string(), {}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << r.error().message;
  EXPECT_THAT(r.error().message, StartsWith("authentication to " + url + " failed"));
}

TEST_F(GitHttpTest, AFailingCredentialProviderFailsTheCloneWithItsError) {
  const std::string url = seededRepository("proj");
  RemoteOptions remote;
  remote.credentials = [](const std::string&, unsigned) -> Result<Credentials> {
    return makeError(ErrorCode::kUnavailable, "secret store is down", true);
  };
  auto r = cloneRepository({url, "main", path("clone").string(), remote});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_TRUE(r.error().retryable);
  EXPECT_THAT(r.error().message, HasSubstr("secret store is down"));
}

TEST_F(GitHttpTest, AHookRefusedPushFailsWithTheServersMessage) {
  const std::string url = seededRepository("proj");
  const std::string bare = server_.repositoryPath("proj");
  const std::string before = git({"--git-dir=" + bare, "rev-parse", "main"});
  // The hook even prints the token: the error must not carry it.
  const fs::path hook = fs::path(bare) / "hooks/pre-receive";
  writeFile(hook, "#!/bin/sh\necho \"policy: direct pushes are not allowed (seen " +
                      server_.token() + ")\" >&2\nexit 1\n");
  fs::permissions(hook, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);

  int calls = 0;
  const fs::path dir = path("clone");
  ASSERT_TRUE(
      cloneRepository({url, "main", dir.string(), tokenAuth(server_.token(), &calls)}).ok());
  writeFile(dir / "x.txt", "x\n");
  ASSERT_TRUE(commitAll(commitIn(dir, "x")).ok());
  auto r = push({dir.string(), url, "main", "main", tokenAuth(server_.token(), &calls)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kFailed) << r.error().message;
  EXPECT_FALSE(r.error().retryable);
  EXPECT_THAT(r.error().message, StartsWith("push to main rejected: pre-receive hook declined"));
  EXPECT_THAT(r.error().message, HasSubstr("policy: direct pushes are not allowed"));
  EXPECT_THAT(r.error().message, HasSubstr("(seen ***)"));
  expectNoSecret(r.error().message);
  EXPECT_EQ(git({"--git-dir=" + bare, "rev-parse", "main"}), before);
}

TEST_F(GitHttpTest, CancellationAbortsAnHttpClone) {
  const std::string url = seededRepository("proj");
  int calls = 0;
  RemoteOptions remote = tokenAuth(server_.token(), &calls);
  int polls = 0;
  remote.cancelled = [&] { return ++polls > 1; };
  const fs::path dir = path("clone");
  auto r = cloneRepository({url, "main", dir.string(), remote});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCancelled) << r.error().message;
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace kiln::git
