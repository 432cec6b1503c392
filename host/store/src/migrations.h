// Numbered SQL migrations, embedded at build time (scripts/embed_migrations.py).
#pragma once

#include <string>
#include <vector>

namespace kiln::store {

struct Migration {
  int version;
  std::string name;
  std::string sql;
};

// "postgres" or "sqlite"; in version order.
std::vector<Migration> embeddedMigrations(const std::string& dialect);

}  // namespace kiln::store
