#include "sqlite_db.h"

#include <filesystem>
#include <system_error>

#include "kiln/domain/build.h"
#include "migrations.h"

namespace kiln::store::sqlite {

Error toError(const SqlError& e) {
  const int primary = e.code & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    return makeError(ErrorCode::kUnavailable, "the SQLite database is busy: " + e.message, true);
  }
  return makeError(ErrorCode::kInternal, "SQLite error: " + e.message);
}

namespace {

bool isMemoryPath(const std::string& path) {
  return path.empty() || path == ":memory:" || path.rfind("file::memory:", 0) == 0;
}

}  // namespace

Result<std::unique_ptr<Connection>> Connection::open(const SqliteOptions& options) {
  if (!isMemoryPath(options.path)) {
    const std::filesystem::path parent = std::filesystem::path(options.path).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) {
      return makeError(ErrorCode::kUnavailable, "cannot create the folder " + parent.string() +
                                                    " for the SQLite database: " + ec.message());
    }
  }
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(
      options.path.c_str(), &raw,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    sqlite3_close_v2(raw);
    return makeError(ErrorCode::kUnavailable,
                     "cannot open the SQLite database " + options.path + ": " + message);
  }
  sqlite3_extended_result_codes(raw, 1);
  std::unique_ptr<Connection> db(new Connection(raw));
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  try {
    // WAL: readers never block the writer. synchronous=FULL: a committed
    // build survives a power loss, because a 202 promises it is durable.
    db->exec("PRAGMA journal_mode = WAL");
    db->exec("PRAGMA synchronous = FULL");
    db->exec("PRAGMA foreign_keys = ON");
  } catch (const SqlError& e) {
    Error err = toError(e);
    err.message = "cannot configure the SQLite database " + options.path + ": " + err.message;
    return err;
  }
  return db;
}

Connection::~Connection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

void Connection::fail(int rc) const {
  throw SqlError{rc, std::string(sqlite3_errmsg(db_)) + " (" + sqlite3_errstr(rc) + ")"};
}

void Connection::exec(const std::string& sql) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
  if (rc != SQLITE_OK) {
    std::string text = message ? message : sqlite3_errstr(rc);
    sqlite3_free(message);
    throw SqlError{rc, text};
  }
}

sqlite3_stmt* Connection::prepare(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) return it->second;
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) fail(rc);
  cache_.emplace(sql, stmt);
  return stmt;
}

Query::~Query() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

void Query::bind(int i, int64_t v) {
  if (int rc = sqlite3_bind_int64(stmt_, i, v); rc != SQLITE_OK) db_.fail(rc);
}

void Query::bind(int i, std::string_view v) {
  if (int rc = sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
      rc != SQLITE_OK) {
    db_.fail(rc);
  }
}

void Query::bind(int i, std::nullopt_t) {
  if (int rc = sqlite3_bind_null(stmt_, i); rc != SQLITE_OK) db_.fail(rc);
}

bool Query::next() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_.fail(rc);
}

void Query::run() {
  while (next()) {
  }
}

std::string Query::text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  if (p == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(p),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

std::optional<std::string> Query::optText(int col) const {
  if (isNull(col)) return std::nullopt;
  return text(col);
}

std::optional<int64_t> Query::optI64(int col) const {
  if (isNull(col)) return std::nullopt;
  return i64(col);
}

Transaction::Transaction(Connection& db, Mode mode) : db_(db) {
  db_.exec(mode == Mode::kWrite ? "BEGIN IMMEDIATE" : "BEGIN");
}

Transaction::~Transaction() {
  if (!open_) return;
  try {
    db_.exec("ROLLBACK");
  } catch (const SqlError&) {
    // Nothing to do: SQLite has already rolled back when ROLLBACK fails.
  }
}

void Transaction::commit() {
  db_.exec("COMMIT");
  open_ = false;
}

namespace {

int schemaVersion(Connection& db) {
  Query q(db, "SELECT coalesce(max(version), 0) FROM schema_migrations");
  q.next();
  return q.i32(0);
}

Error newerSchema(int version, int known) {
  return makeError(ErrorCode::kUnsupported, "the SQLite database has schema version " +
                                                std::to_string(version) +
                                                " but this kiln knows versions up to " +
                                                std::to_string(known) + "; use a newer kiln");
}

}  // namespace

Result<MigrationReport> applyMigrations(Connection& db) {
  const std::vector<Migration> migrations = embeddedMigrations("sqlite");
  const int known = migrations.empty() ? 0 : migrations.back().version;
  MigrationReport report;
  {
    Transaction tx(db, Transaction::Mode::kWrite);
    db.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "  version INTEGER PRIMARY KEY,"
        "  name TEXT NOT NULL,"
        "  applied_at INTEGER NOT NULL)");
    tx.commit();
  }
  for (const Migration& m : migrations) {
    // One transaction per migration; reading the version inside it makes two
    // processes migrating at once apply each migration exactly once.
    Transaction tx(db, Transaction::Mode::kWrite);
    const int version = schemaVersion(db);
    if (version > known) return newerSchema(version, known);
    if (m.version <= version) continue;
    db.exec(m.sql);
    Query(db, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
          m.version, m.name, domain::nowMs())
        .run();
    tx.commit();
    ++report.applied;
  }
  report.version = schemaVersion(db);
  if (report.version > known) return newerSchema(report.version, known);
  return report;
}

}  // namespace kiln::store::sqlite
