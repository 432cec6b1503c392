#include "yaml_json.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

namespace kiln::config::internal {

namespace {

using nlohmann::json;

bool isVariableName(std::string_view name) {
  if (name.empty()) return false;
  const auto alpha = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
  };
  if (!alpha(name[0])) return false;
  for (char c : name) {
    if (!alpha(c) && !(c >= '0' && c <= '9')) return false;
  }
  return true;
}

template <class T>
bool parseWhole(std::string_view text, T* value) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return ec == std::errc() && end == text.data() + text.size();
}

json typeInteger(const std::string& text) {
  std::string_view digits = text;
  if (!digits.empty() && digits[0] == '+') digits.remove_prefix(1);
  if (int64_t value = 0; parseWhole(digits, &value)) return value;
  if (uint64_t value = 0; parseWhole(digits, &value)) return value;
  // Too large for 64 bits: a JSON number may still carry it, as a double.
  double value = 0;
  parseWhole(digits, &value);
  return value;
}

json typeFloat(const std::string& text) {
  std::string_view s = text;
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (double value = 0; parseWhole(s, &value)) return value;
  return text;
}

class ConfigConverter {
 public:
  ConfigConverter(Context& ctx, const std::string& label, InstanceConfig* out)
      : ctx_(ctx), label_(label), out_(out) {}

  json convert(const YAML::Node& node, const SourceLocation& where, const std::string& pointer) {
    out_->config_locations[pointer] = where;
    switch (node.Type()) {
      case YAML::NodeType::Scalar: {
        const auto scalar = resolveScalar(ctx_, node, where);
        if (!scalar) return nullptr;
        if (scalar->substituted) out_->secret_pointers.insert(pointer);
        return scalar->plain ? typePlainScalar(scalar->text) : json(scalar->text);
      }
      case YAML::NodeType::Sequence: {
        json array = json::array();
        size_t i = 0;
        for (const YAML::Node& element : node) {
          array.push_back(convert(element, ctx_.at(element), pointer + "/" + std::to_string(i++)));
        }
        return array;
      }
      case YAML::NodeType::Map: return convertMap(node, pointer);
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined: break;
    }
    return nullptr;
  }

 private:
  json convertMap(const YAML::Node& node, const std::string& pointer) {
    json object = json::object();
    const std::vector<MapEntry> entries = mapEntries(ctx_, node);
    std::set<std::string> keys;
    for (const MapEntry& e : entries) keys.insert(e.key);
    for (const MapEntry& e : entries) {
      const std::string child = pointer + "/" + escapePointerToken(e.key);
      json value = convert(e.value, e.value_where, child);
      const auto stem = fileKeyStem(e.key);
      if (!stem || !value.is_string()) {
        object[e.key] = std::move(value);
        continue;
      }
      // `token_file: path` becomes `token: <content of path>`.
      out_->config_locations.erase(child);
      out_->secret_pointers.erase(child);
      if (keys.count(*stem) != 0) {
        ctx_.error(e.key_where, label_ + ": both " + quote(*stem) + " and " + quote(e.key) +
                                    " are set; keep one");
        continue;
      }
      const std::string path = resolvePath(ctx_.baseDir(), value.get<std::string>());
      std::string content;
      std::string error;
      if (!readSecretFile(path, &content, &error)) {
        ctx_.error(e.value_where,
                   label_ + ": " + e.key + ": cannot read " + quote(path) + ": " + error);
        continue;
      }
      const std::string target = pointer + "/" + escapePointerToken(*stem);
      object[*stem] = std::move(content);
      out_->config_locations[target] = e.value_where;
      out_->secret_pointers.insert(target);
    }
    return object;
  }

  Context& ctx_;
  const std::string& label_;
  InstanceConfig* out_;
};

}  // namespace

SourceLocation Context::at(const YAML::Mark& mark) const {
  if (mark.is_null()) return SourceLocation{file_, 0, 0};
  return SourceLocation{file_, mark.line + 1, mark.column + 1};
}

SourceLocation Context::at(const YAML::Node& node) const {
  return at(node.Mark());
}

std::vector<MapEntry> mapEntries(Context& ctx, const YAML::Node& map) {
  std::vector<MapEntry> entries;
  std::map<std::string, int> first_line;
  for (auto it = map.begin(); it != map.end(); ++it) {
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    const SourceLocation key_where = ctx.at(key);
    if (!key.IsScalar()) {
      ctx.error(key_where, "a key must be a name, got " + describe(key, std::nullopt));
      continue;
    }
    const std::string& name = key.Scalar();
    const auto [seen, inserted] = first_line.emplace(name, key_where.line);
    if (!inserted) {
      ctx.error(key_where, "duplicate key " + quote(name) + " (first at line " +
                               std::to_string(seen->second) + ")");
      continue;
    }
    SourceLocation value_where = ctx.at(value);
    if (value.IsNull() && value_where.line != key_where.line) value_where = key_where;
    entries.push_back(MapEntry{name, key, value, key_where, value_where});
  }
  return entries;
}

std::string expandVariables(std::string_view text, const EnvLookup& env,
                            std::vector<std::string>* errors, bool* substituted) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text.substr(i, 3) == "$${") {
      out += "${";
      i += 3;
      continue;
    }
    if (text.substr(i, 2) != "${") {
      out += text[i++];
      continue;
    }
    const size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      errors->push_back(
          "unterminated \"${\" (close it with \"}\", or write \"$${\" for a literal \"${\")");
      out += text.substr(i);
      break;
    }
    const std::string_view inner = text.substr(i + 2, close - i - 2);
    std::string_view name = inner;
    std::optional<std::string_view> fallback;
    if (const size_t sep = inner.find(":-"); sep != std::string_view::npos) {
      name = inner.substr(0, sep);
      fallback = inner.substr(sep + 2);
    }
    if (!isVariableName(name)) {
      errors->push_back("invalid variable reference " + quote("${" + std::string(inner) + "}") +
                        ": write ${NAME} or ${NAME:-default} with NAME matching "
                        "[A-Za-z_][A-Za-z0-9_]*, or $${ for a literal \"${\"");
    } else if (auto value = env(std::string(name)); value && !(fallback && value->empty())) {
      out += *value;
      *substituted = true;
    } else if (fallback) {
      out += *fallback;
    } else {
      errors->push_back("environment variable " + quote(name) + " is not set");
    }
    i = close + 1;
  }
  return out;
}

std::optional<Scalar> resolveScalar(Context& ctx, const YAML::Node& node,
                                    const SourceLocation& where) {
  Scalar scalar;
  scalar.raw = node.Scalar();
  scalar.plain = node.Tag() == "?";
  std::vector<std::string> errors;
  scalar.text = expandVariables(scalar.raw, ctx.env(), &errors, &scalar.substituted);
  for (std::string& error : errors) ctx.error(where, std::move(error));
  if (!errors.empty()) return std::nullopt;
  return scalar;
}

json typePlainScalar(const std::string& text) {
  static const std::regex kNull("null|Null|NULL|~|");
  static const std::regex kTrue("true|True|TRUE");
  static const std::regex kFalse("false|False|FALSE");
  static const std::regex kDecimal("[-+]?[0-9]+");
  static const std::regex kOctal("0o[0-7]+");
  static const std::regex kHex("0x[0-9a-fA-F]+");
  static const std::regex kFloat(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
  if (std::regex_match(text, kNull)) return nullptr;
  if (std::regex_match(text, kTrue)) return true;
  if (std::regex_match(text, kFalse)) return false;
  if (std::regex_match(text, kDecimal)) return typeInteger(text);
  if (std::regex_match(text, kOctal) || std::regex_match(text, kHex)) {
    uint64_t value = 0;
    const int base = text[1] == 'o' ? 8 : 16;
    auto [end, ec] = std::from_chars(text.data() + 2, text.data() + text.size(), value, base);
    if (ec != std::errc()) return text;
    if (value <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(value);
    return value;
  }
  if (std::regex_match(text, kFloat)) return typeFloat(text);
  return text;
}

std::string quote(std::string_view text) {
  constexpr size_t kMax = 80;
  std::string s(text.substr(0, kMax));
  std::string out = json(s).dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > kMax) out.insert(out.size() - 1, "...");
  return out;
}

std::string shown(const Scalar& scalar) {
  if (scalar.substituted) return quote(scalar.raw) + " (value not shown)";
  return quote(scalar.text);
}

std::string describe(const YAML::Node& node, const std::optional<Scalar>& scalar) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (!node.IsScalar()) return "null";
  if (scalar) return shown(*scalar);
  return quote(node.Scalar());
}

std::string resolvePath(const std::string& base_dir, const std::string& path) {
  std::filesystem::path p(path);
  if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
  return p.lexically_normal().string();
}

bool readFile(const std::string& path, std::string* content, std::string* error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = std::strerror(errno);
    return false;
  }
  std::string data;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    data.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  *content = std::move(data);
  return true;
}

bool readSecretFile(const std::string& path, std::string* content, std::string* error) {
  if (!readFile(path, content, error)) return false;
  // Files written by `echo` or editors end in a newline that is not part of the secret.
  if (content->ends_with("\r\n")) {
    content->resize(content->size() - 2);
  } else if (content->ends_with("\n")) {
    content->pop_back();
  }
  return true;
}

std::optional<std::string> fileKeyStem(std::string_view key) {
  constexpr std::string_view kSuffix = "_file";
  if (key.size() <= kSuffix.size() || !key.ends_with(kSuffix)) return std::nullopt;
  return std::string(key.substr(0, key.size() - kSuffix.size()));
}

std::string escapePointerToken(std::string_view token) {
  std::string out;
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

void convertInstanceConfig(Context& ctx, const YAML::Node& node, const SourceLocation& where,
                           const std::string& label, InstanceConfig* out) {
  ConfigConverter converter(ctx, label, out);
  out->config = converter.convert(node, where, "");
}

}  // namespace kiln::config::internal
