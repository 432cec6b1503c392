// A worker process for pg_claim_stress_test: opens a PostgresStore of its own
// (its own pool and LISTEN connection) and works the queue the way kiln's
// worker pool does, so that claims really race across processes.
//
//   pg_claim_worker loop  URL NAME THREADS LEASE_MS EXPECTED
//     THREADS threads claim -> renew -> finish(completed) until EXPECTED
//     builds are terminal in the database. Prints "ready" once the store is
//     open, then "completed N unavailable U" at the end.
//   pg_claim_worker stall URL NAME LEASE_MS
//     Claims one build (waiting for one to appear) and prints
//     "claimed TASK_ID ATTEMPT"; then stops renewing until SIGUSR1, tries
//     to renew and to finish, and prints "renew CODE" and "finish CODE"
//     (CODE: ok or an error code name).
//
// Exit status 0 when it ran as described; 1 with the reason on stderr.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "kiln/domain/build.h"
#include "kiln/ports/store.h"
#include "kiln/store/open.h"

namespace {

using namespace std::chrono_literals;
using kiln::ErrorCode;
using kiln::domain::BuildStatus;

[[noreturn]] void die(const std::string& why) {
  std::cerr << "pg_claim_worker: " << why << std::endl;
  std::exit(1);
}

std::unique_ptr<kiln::ports::Store> openStore(const std::string& url, int pool_size) {
  kiln::store::PostgresOptions options;
  options.url = url;
  options.pool_size = pool_size;
  auto store = kiln::store::openPostgresStore(options);
  if (!store.ok()) die("cannot open the store: " + store.error().message);
  return std::move(store).value();
}

// How many builds are terminal, read straight from the database.
class TerminalCounter {
 public:
  explicit TerminalCounter(const std::string& url) : conn_(url) {}
  long count() {
    std::lock_guard lock(mu_);
    pqxx::read_transaction tx(conn_);
    return tx
        .exec1(
            "SELECT count(*) FROM builds WHERE status IN ('completed', 'failed', "
            "'cancelled')")[0]
        .as<long>();
  }

 private:
  std::mutex mu_;
  pqxx::connection conn_;
};

int loop(const std::string& url, const std::string& name, int threads, int lease_ms,
         long expected) {
  auto store = openStore(url, threads);
  TerminalCounter terminal(url);
  std::cout << "ready" << std::endl;

  std::atomic<long> completed{0};
  std::atomic<long> unavailable{0};
  std::mutex failure_mu;
  std::string failure;
  auto fail = [&](const std::string& why) {
    std::lock_guard lock(failure_mu);
    if (failure.empty()) failure = why;
  };
  auto failed = [&] {
    std::lock_guard lock(failure_mu);
    return !failure.empty();
  };

  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const std::string worker = name + "-" + std::to_string(t);
      std::mt19937 rng(std::random_device{}());
      const auto lease = std::chrono::milliseconds(lease_ms);
      while (!failed()) {
        auto c = store->claim(worker, lease);
        if (!c.ok()) {
          if (c.error().code == ErrorCode::kUnavailable) {
            ++unavailable;
            continue;
          }
          return fail("claim: " + c.error().message);
        }
        if (!c->has_value()) {
          if (terminal.count() >= expected) return;
          store->waitForWork(500ms);
          continue;
        }
        const kiln::ports::Claim& claim = **c;
        if (claim.build.status != BuildStatus::kRunning || claim.build.attempts != 1 ||
            claim.build.worker_id != worker) {
          return fail("claimed build " + claim.build.task_id + " is not a first attempt by " +
                      worker);
        }
        // A little work, so that claims and finishes interleave.
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
        auto renewed = store->renew(claim.build.task_id, claim.lease_token, lease);
        if (!renewed.ok()) return fail("renew: " + renewed.error().message);
        kiln::ports::Outcome outcome;
        outcome.status = BuildStatus::kCompleted;
        outcome.result.success = true;
        outcome.result.output = "done by " + worker;
        for (;;) {
          auto finished = store->finish(claim.build.task_id, claim.lease_token, outcome);
          if (finished.ok()) break;
          // Retried only when it cannot have taken effect; otherwise a
          // retry must be refused as stale, which the test would notice.
          if (finished.error().code != ErrorCode::kUnavailable) {
            return fail("finish: " + finished.error().message);
          }
          ++unavailable;
        }
        ++completed;
      }
    });
  }
  for (auto& w : workers) w.join();
  if (failed()) die(failure);
  std::cout << "completed " << completed << " unavailable " << unavailable << std::endl;
  return 0;
}

int stall(const std::string& url, const std::string& name, int lease_ms) {
  // SIGUSR1 is waited for with sigwait: block it before any thread starts.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);

  auto store = openStore(url, 1);
  std::cout << "ready" << std::endl;
  std::optional<kiln::ports::Claim> claim;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!claim) {
    auto c = store->claim(name, std::chrono::milliseconds(lease_ms));
    if (!c.ok()) die("claim: " + c.error().message);
    claim = *c;
    if (!claim) {
      if (std::chrono::steady_clock::now() > deadline) die("nothing to claim for 30 s");
      store->waitForWork(1s);
    }
  }
  std::cout << "claimed " << claim->build.task_id << " " << claim->build.attempts << std::endl;

  int sig = 0;
  sigwait(&usr1, &sig);
  auto code = [](const auto& r) {
    return r.ok() ? std::string("ok") : std::string(kiln::errorCodeName(r.error().code));
  };
  auto renewed = store->renew(claim->build.task_id, claim->lease_token, 30s);
  std::cout << "renew " << code(renewed) << std::endl;
  kiln::ports::Outcome outcome;
  outcome.status = BuildStatus::kCompleted;
  outcome.result.success = true;
  outcome.result.output = "late result from " + name;
  auto finished = store->finish(claim->build.task_id, claim->lease_token, outcome);
  std::cout << "finish " << code(finished) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 6 && args[0] == "loop") {
      return loop(args[1], args[2], std::stoi(args[3]), std::stoi(args[4]), std::stol(args[5]));
    }
    if (args.size() == 4 && args[0] == "stall") {
      return stall(args[1], args[2], std::stoi(args[3]));
    }
  } catch (const std::exception& e) {
    die(e.what());
  }
  die("usage: pg_claim_worker loop URL NAME THREADS LEASE_MS EXPECTED | "
      "stall URL NAME LEASE_MS");
}
