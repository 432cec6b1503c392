#include "pg_pool.h"

#include <regex>

namespace kiln::store::postgres {
namespace {

// The password inside a postgresql:// URL or a key=value connection string.
std::string passwordOf(const std::string& url) {
  static const std::regex kUri(R"(^postgres(ql)?://[^:@/?]*:([^@/?]*)@)");
  static const std::regex kKeyValue(R"((^|\s)password\s*=\s*('((\\.|[^'])*)'|(\S+)))");
  std::smatch m;
  if (std::regex_search(url, m, kUri)) return m[2];
  if (std::regex_search(url, m, kKeyValue)) return m[4].matched ? m[4] : m[5];
  return "";
}

void replaceAll(std::string* s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t pos = s->find(from); pos != std::string::npos; pos = s->find(from, pos + to.size())) {
    s->replace(pos, from.size(), to);
  }
}

// kiln's connection defaults, unless the URL sets them itself.
std::string withDefaults(const std::string& url) {
  const bool is_uri = url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0;
  std::string out = url;
  auto add = [&](const std::string& key, const std::string& value) {
    if (url.find(key + "=") != std::string::npos) return;
    if (is_uri) {
      out += (out.find('?') == std::string::npos ? "?" : "&") + key + "=" + value;
    } else {
      out += (out.empty() ? "" : " ") + key + "=" + value;
    }
  };
  add("connect_timeout", "10");
  add("application_name", "kiln");
  return out;
}

bool isConnectionState(const std::string& sqlstate) {
  // Class 08 (connection exception); admin_shutdown, crash_shutdown,
  // cannot_connect_now; too_many_connections.
  return sqlstate.rfind("08", 0) == 0 || sqlstate == "57P01" || sqlstate == "57P02" ||
         sqlstate == "57P03" || sqlstate == "53300";
}

std::string firstLine(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

}  // namespace

std::string redact(std::string message, const std::string& url) {
  replaceAll(&message, url, "<database url>");
  replaceAll(&message, withDefaults(url), "<database url>");
  const std::string password = passwordOf(url);
  if (password.size() >= 2) replaceAll(&message, password, "***");
  return message;
}

Result<std::unique_ptr<pqxx::connection>> connect(const std::string& url,
                                                  const std::vector<Statement>& statements) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(withDefaults(url));
  } catch (const std::exception& e) {
    return makeError(ErrorCode::kUnavailable,
                     "cannot connect to PostgreSQL: " + firstLine(redact(e.what(), url)), true);
  }
  try {
    pqxx::nontransaction setup(*conn);
    // NOTICEs ("relation already exists, skipping", ...) would go to stderr.
    setup.exec0("SET client_min_messages TO warning");
    // Rationale: after five runs PostgreSQL may cache a generic plan of a
    // prepared statement, chosen with the statistics of that moment; on a
    // fresh database those say the queue is empty, and the claim query then
    // crawls until autoanalyze replans it. Planning each run costs well under
    // a millisecond and follows the queue as it grows.
    setup.exec0("SET plan_cache_mode TO force_custom_plan");
    setup.commit();
    for (const Statement& s : statements) conn->prepare(s.name, s.sql);
    // Registered now rather than lazily at first use, so that a statement
    // the schema rejects fails at start.
    for (const Statement& s : statements) conn->prepare_now(s.name);
  } catch (...) {
    return classifyCurrentException("preparing the database connection", false, url).error;
  }
  return conn;
}

Failure classifyCurrentException(std::string_view what, bool committing, const std::string& url) {
  using Kind = Failure::Kind;
  const std::string op(what);
  auto fail = [&](Kind kind, ErrorCode code, const std::string& detail, bool retryable) {
    return Failure{kind, makeError(code, redact(detail, url), retryable)};
  };
  // The connection went away: before COMMIT nothing can have taken effect.
  auto lost = [&](const std::exception& e) {
    if (committing) {
      return fail(Kind::kInDoubt, ErrorCode::kUnavailable,
                  "the database connection was lost while committing " + op +
                      "; whether it took effect is unknown",
                  true);
    }
    return fail(Kind::kBrokenConnection, ErrorCode::kUnavailable,
                "the database is unavailable (" + op + "): " + firstLine(e.what()), true);
  };
  auto busy = [&](const std::exception& e) {
    return fail(Kind::kTransient, ErrorCode::kUnavailable,
                "the database is busy (" + op + "): " + firstLine(e.what()), true);
  };
  try {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    committing = true;
    return lost(e);
  } catch (const pqxx::broken_connection& e) {
    return lost(e);
  } catch (const pqxx::statement_completion_unknown& e) {
    return lost(e);
  } catch (const pqxx::transaction_rollback& e) {  // serialization failure, deadlock
    return busy(e);
  } catch (const pqxx::sql_error& e) {
    const std::string& state = e.sqlstate();
    if (isConnectionState(state)) return lost(e);
    if (state == "40001" || state == "40P01") return busy(e);
    if (state == "57014") {  // query_canceled (statement_timeout)
      return fail(Kind::kFatal, ErrorCode::kUnavailable,
                  "the database cancelled " + op + ": " + firstLine(e.what()), true);
    }
    return fail(Kind::kFatal, ErrorCode::kInternal,
                "database error in " + op + " (SQLSTATE " + state + "): " + firstLine(e.what()),
                false);
  } catch (const std::exception& e) {
    return fail(Kind::kFatal, ErrorCode::kInternal,
                "unexpected error in " + op + ": " + firstLine(e.what()), false);
  } catch (...) {
    return fail(Kind::kFatal, ErrorCode::kInternal, "unexpected error in " + op, false);
  }
}

Pool::Pool(std::string url, std::vector<Statement> statements, int size)
    : url_(std::move(url)), statements_(std::move(statements)), slots_(size < 1 ? 1 : size) {}

Result<void> Pool::connectAll() {
  for (Slot& slot : slots_) {
    if (slot.conn) continue;
    auto conn = connect(url_, statements_);
    if (!conn.ok()) return conn.error();
    slot.conn = std::move(conn).value();
  }
  return {};
}

Result<size_t> Pool::acquire(bool fresh) {
  size_t index = 0;
  std::unique_ptr<pqxx::connection> dropped;
  {
    std::unique_lock lock(mu_);
    for (;;) {
      // Prefer a connected slot; an idle broken one is reconnected below.
      size_t found = slots_.size();
      for (size_t i = 0; i < slots_.size(); ++i) {
        if (slots_[i].busy) continue;
        if (found == slots_.size() || (slots_[i].conn && !slots_[found].conn)) found = i;
      }
      if (found != slots_.size()) {
        index = found;
        slots_[index].busy = true;
        if (fresh) dropped = std::move(slots_[index].conn);
        break;
      }
      freed_.wait(lock);
    }
  }
  dropped.reset();
  if (!slots_[index].conn) {
    auto conn = connect(url_, statements_);
    if (!conn.ok()) {
      release(index, false);
      return conn.error();
    }
    slots_[index].conn = std::move(conn).value();
  }
  return index;
}

void Pool::release(size_t slot, bool broken) {
  std::unique_ptr<pqxx::connection> dropped;
  {
    std::lock_guard lock(mu_);
    if (broken) dropped = std::move(slots_[slot].conn);
    slots_[slot].busy = false;
  }
  freed_.notify_one();
  // `dropped` closes outside the lock.
}

}  // namespace kiln::store::postgres
