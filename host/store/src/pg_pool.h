// PostgreSQL plumbing for the PostgreSQL store: connecting (with the URL kept
// out of every message), a small pool of connections with kiln's statements
// prepared on each, and the one place where libpqxx exceptions become
// kiln::Error, with the retry policy for broken connections. Internal to
// kiln_store.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "kiln/domain/result.h"

namespace kiln::store::postgres {

// A prepared statement: registered on every pooled connection.
struct Statement {
  const char* name;
  std::string sql;
};

// `message` with the URL and its password masked: errors never carry secrets.
std::string redact(std::string message, const std::string& url);

// Opens a connection: kiln's defaults (connect timeout, application name)
// added to `url`, server notices silenced, `statements` prepared.
// kUnavailable when the server cannot be reached (message redacted).
Result<std::unique_ptr<pqxx::connection>> connect(const std::string& url,
                                                  const std::vector<Statement>& statements);

// What went wrong in a transaction, and whether running it again may help.
struct Failure {
  enum class Kind {
    kBrokenConnection,  // nothing can have committed: reconnect and retry once
    kInDoubt,           // lost while committing: the outcome is unknown
    kTransient,         // serialization failure or deadlock: retry
    kFatal,             // anything else
  };
  Kind kind = Kind::kFatal;
  Error error;
};
// Classifies the exception in flight (call from a catch block). `committing`:
// the exception came from COMMIT.
Failure classifyCurrentException(std::string_view what, bool committing, const std::string& url);

// A fixed number of connections, each used by one thread at a time. A
// connection found broken is dropped and replaced on its next use.
// Thread-safe.
class Pool {
 public:
  Pool(std::string url, std::vector<Statement> statements, int size);
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Connects every slot now, so that a bad URL fails at start.
  Result<void> connectAll();

  // Runs `body` in a READ COMMITTED transaction on a pooled connection and
  // commits when it returns ok (rolls back otherwise). A broken connection is
  // replaced and `body` run once more; a serialization failure or deadlock is
  // retried a few times; otherwise the failure is reported (kUnavailable,
  // retryable, when the database is unreachable or the commit's outcome is
  // unknown). `what` names the operation in messages. `body` may run twice,
  // so it must not have effects outside the transaction.
  template <class T>
  Result<T> transact(std::string_view what, const std::function<Result<T>(pqxx::work&)>& body);

 private:
  struct Slot {
    std::unique_ptr<pqxx::connection> conn;
    bool busy = false;
  };
  // Blocks until a slot is free; connects it if needed. `fresh`: replace its
  // connection with a new one (after a break, the others may be broken too).
  Result<size_t> acquire(bool fresh);
  void release(size_t slot, bool broken);

  const std::string url_;
  const std::vector<Statement> statements_;
  std::mutex mu_;
  std::condition_variable freed_;
  std::vector<Slot> slots_;
};

template <class T>
Result<T> Pool::transact(std::string_view what, const std::function<Result<T>(pqxx::work&)>& body) {
  constexpr int kMaxTransientRetries = 5;
  int broken_retries = 0;
  int transient_retries = 0;
  bool fresh = false;
  for (;;) {
    Result<size_t> slot = acquire(fresh);
    if (!slot.ok()) return slot.error();
    bool committing = false;
    Failure failure;
    try {
      pqxx::work txn(*slots_[*slot].conn);
      Result<T> result = body(txn);
      if (result.ok()) {
        committing = true;
        txn.commit();
      } else {
        txn.abort();
      }
      release(*slot, false);
      return result;
    } catch (...) {
      failure = classifyCurrentException(what, committing, url_);
    }
    const bool broken =
        failure.kind == Failure::Kind::kBrokenConnection || failure.kind == Failure::Kind::kInDoubt;
    release(*slot, broken);
    if (failure.kind == Failure::Kind::kBrokenConnection && broken_retries++ < 1) {
      fresh = true;
      continue;
    }
    if (failure.kind == Failure::Kind::kTransient && transient_retries++ < kMaxTransientRetries) {
      continue;
    }
    return failure.error;
  }
}

}  // namespace kiln::store::postgres
