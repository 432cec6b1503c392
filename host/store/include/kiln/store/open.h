// Opening the stores. Both apply their pending migrations when opened (and
// `kiln migrate` applies them without serving).
#pragma once

#include <memory>
#include <string>

#include "kiln/domain/result.h"
#include "kiln/ports/store.h"

namespace kiln::store {

struct SqliteOptions {
  std::string path;  // the database file; its folder is created if missing
  int busy_timeout_ms = 5000;
};

struct PostgresOptions {
  std::string url;    // libpq connection string or postgresql:// URL (a secret)
  int pool_size = 4;  // connections for queries; plus one dedicated LISTEN connection
};

struct MigrationReport {
  int applied = 0;  // migrations applied now
  int version = 0;  // schema version afterwards
};

// Open (creating and migrating as needed). Errors never contain the URL's
// password.
Result<std::unique_ptr<ports::Store>> openSqliteStore(const SqliteOptions& options);
Result<std::unique_ptr<ports::Store>> openPostgresStore(const PostgresOptions& options);

// Apply pending migrations only.
Result<MigrationReport> migrateSqlite(const SqliteOptions& options);
Result<MigrationReport> migratePostgres(const PostgresOptions& options);

}  // namespace kiln::store
