// Workspace preparation: kiln's libgit2 clone of a repository against
// `git clone` of the same repository, in the same run.
//   kiln-bench-workspace --repo PATH --runs N
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/git/workspace.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::string repo;
  int runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--repo") repo = argv[i + 1];
    if (k == "--runs") runs = std::atoi(argv[i + 1]);
  }
  if (repo.empty()) {
    std::fprintf(stderr, "usage: kiln-bench-workspace --repo PATH [--runs N]\n");
    return 2;
  }
  const fs::path scratch = fs::temp_directory_path() / "kiln-bench-ws";
  auto time = [&](auto&& fn) {
    std::vector<double> ms;
    for (int r = 0; r < runs; ++r) {
      fs::remove_all(scratch);
      const auto t0 = std::chrono::steady_clock::now();
      if (!fn()) return std::vector<double>{};
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return ms;
  };
  const auto kiln = time([&] {
    auto r = kiln::git::cloneRepository({"file://" + repo, "main", scratch.string(), {}});
    if (!r.ok()) std::fprintf(stderr, "kiln clone failed: %s\n", r.error().message.c_str());
    return r.ok();
  });
  const auto git = time([&] {
    const std::string cmd =
        "git clone --quiet --branch main --single-branch file://" + repo + " " + scratch.string();
    return std::system(cmd.c_str()) == 0;
  });
  fs::remove_all(scratch);
  auto row = [&](const char* name, const std::vector<double>& ms) {
    if (ms.empty()) return;
    double sum = 0, best = ms[0];
    for (double m : ms) {
      sum += m;
      best = std::min(best, m);
    }
    std::printf("| %-28s | %4d | %9.1f | %9.1f |\n", name, runs, sum / ms.size(), best);
  };
  std::printf("| clone (file://, branch main)  | runs | mean ms   | best ms   |\n");
  std::printf("|------------------------------|------|-----------|-----------|\n");
  row("kiln (libgit2 1.5)", kiln);
  row("git clone --single-branch", git);
  return kiln.empty() || git.empty() ? 1 : 0;
}
