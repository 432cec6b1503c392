// A thin layer over the sqlite3 C API for the SQLite store: one connection,
// cached prepared statements, RAII statements and transactions, and the
// migration runner. Internal to kiln_store.
//
// Errors inside the adapter are thrown as SqlError and converted to a
// kiln::Error at the edge of every public Store method (toError), so that the
// queries read straight through.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <sqlite3.h>

#include "kiln/domain/result.h"
#include "kiln/store/open.h"

namespace kiln::store::sqlite {

struct SqlError {
  int code = SQLITE_ERROR;  // extended result code
  std::string message;
};

// SQLITE_BUSY/LOCKED -> kUnavailable (retryable); everything else kInternal.
Error toError(const SqlError& e);

// One database connection. Not thread-safe: the owner serializes access.
class Connection {
 public:
  // Opens (creating the file and its folder as needed) and configures WAL,
  // synchronous=FULL, foreign keys and the busy timeout.
  static Result<std::unique_ptr<Connection>> open(const SqliteOptions& options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one or more statements without results. Throws SqlError.
  void exec(const std::string& sql);
  // A cached prepared statement for `sql` (reset, no bindings). Throws SqlError.
  sqlite3_stmt* prepare(const std::string& sql);
  int changes() const { return sqlite3_changes(db_); }
  [[noreturn]] void fail(int rc) const;

 private:
  explicit Connection(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;  // by SQL text
};

// A prepared statement in use: binds by position (1-based), steps, reads
// columns, and resets itself on destruction so the cached statement is reusable.
class Query {
 public:
  template <class... Args>
  Query(Connection& db, const std::string& sql, const Args&... args)
      : db_(db), stmt_(db.prepare(sql)) {
    int i = 0;
    (bind(++i, args), ...);
  }
  ~Query();
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  // Advances to the next row; false when there are no more. Throws SqlError.
  bool next();
  // Runs a statement that returns no rows.
  void run();

  bool isNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  int i32(int col) const { return sqlite3_column_int(stmt_, col); }
  std::string text(int col) const;
  std::optional<std::string> optText(int col) const;
  std::optional<int64_t> optI64(int col) const;

 private:
  void bind(int i, int64_t v);
  void bind(int i, int v) { bind(i, static_cast<int64_t>(v)); }
  void bind(int i, bool v) { bind(i, static_cast<int64_t>(v ? 1 : 0)); }
  void bind(int i, std::string_view v);
  void bind(int i, const std::string& v) { bind(i, std::string_view(v)); }
  void bind(int i, const char* v) { bind(i, std::string_view(v)); }
  void bind(int i, std::nullopt_t);
  template <class T>
  void bind(int i, const std::optional<T>& v) {
    if (v)
      bind(i, *v);
    else
      bind(i, std::nullopt);
  }

  Connection& db_;
  sqlite3_stmt* stmt_;
};

// BEGIN IMMEDIATE (every write: takes the write lock up front, so two writers
// never deadlock upgrading a read lock) or a deferred BEGIN (reads). Rolls back
// unless committed.
class Transaction {
 public:
  enum class Mode { kRead, kWrite };
  Transaction(Connection& db, Mode mode);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Connection& db_;
  bool open_ = true;
};

// Applies the embedded sqlite migrations that `db` lacks, each in its own
// transaction, recording them in schema_migrations. Throws SqlError; returns
// kUnsupported when the database is newer than this build of kiln.
Result<MigrationReport> applyMigrations(Connection& db);

}  // namespace kiln::store::sqlite
