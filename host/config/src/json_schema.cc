#include "kiln/config/json_schema.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <regex>
#include <string_view>
#include <utility>
#include <variant>

#include "suggest.h"

namespace kiln::config {
namespace {

using nlohmann::json;
using Pointer = json::json_pointer;

// Rationale: std::wregex over UTF-32 makes "." and character classes see code
// points, not UTF-8 bytes, consistent with minLength/maxLength. glibc's
// wchar_t is 32 bits wide.
static_assert(sizeof(wchar_t) == 4, "patterns are matched as UTF-32 in std::wstring");

// Bundled so that {"$ref": "http://json-schema.org/draft-07/schema#"} resolves
// without a network; a plugin option that is itself a schema uses it.
constexpr std::string_view kDraft07Uri = "http://json-schema.org/draft-07/schema";
constexpr const char* kDraft07MetaSchema = R"json({
  "$schema": "http://json-schema.org/draft-07/schema#",
  "$id": "http://json-schema.org/draft-07/schema#",
  "title": "Core schema meta-schema",
  "definitions": {
    "schemaArray": {"type": "array", "minItems": 1, "items": {"$ref": "#"}},
    "nonNegativeInteger": {"type": "integer", "minimum": 0},
    "nonNegativeIntegerDefault0": {
      "allOf": [{"$ref": "#/definitions/nonNegativeInteger"}, {"default": 0}]
    },
    "simpleTypes": {
      "enum": ["array", "boolean", "integer", "null", "number", "object", "string"]
    },
    "stringArray": {
      "type": "array", "items": {"type": "string"}, "uniqueItems": true, "default": []
    }
  },
  "type": ["object", "boolean"],
  "properties": {
    "$id": {"type": "string", "format": "uri-reference"},
    "$schema": {"type": "string", "format": "uri"},
    "$ref": {"type": "string", "format": "uri-reference"},
    "$comment": {"type": "string"},
    "title": {"type": "string"},
    "description": {"type": "string"},
    "default": true,
    "readOnly": {"type": "boolean", "default": false},
    "writeOnly": {"type": "boolean", "default": false},
    "examples": {"type": "array", "items": true},
    "multipleOf": {"type": "number", "exclusiveMinimum": 0},
    "maximum": {"type": "number"},
    "exclusiveMaximum": {"type": "number"},
    "minimum": {"type": "number"},
    "exclusiveMinimum": {"type": "number"},
    "maxLength": {"$ref": "#/definitions/nonNegativeInteger"},
    "minLength": {"$ref": "#/definitions/nonNegativeIntegerDefault0"},
    "pattern": {"type": "string", "format": "regex"},
    "additionalItems": {"$ref": "#"},
    "items": {
      "anyOf": [{"$ref": "#"}, {"$ref": "#/definitions/schemaArray"}],
      "default": true
    },
    "maxItems": {"$ref": "#/definitions/nonNegativeInteger"},
    "minItems": {"$ref": "#/definitions/nonNegativeIntegerDefault0"},
    "uniqueItems": {"type": "boolean", "default": false},
    "contains": {"$ref": "#"},
    "maxProperties": {"$ref": "#/definitions/nonNegativeInteger"},
    "minProperties": {"$ref": "#/definitions/nonNegativeIntegerDefault0"},
    "required": {"$ref": "#/definitions/stringArray"},
    "additionalProperties": {"$ref": "#"},
    "definitions": {"type": "object", "additionalProperties": {"$ref": "#"}, "default": {}},
    "properties": {"type": "object", "additionalProperties": {"$ref": "#"}, "default": {}},
    "patternProperties": {
      "type": "object",
      "additionalProperties": {"$ref": "#"},
      "propertyNames": {"format": "regex"},
      "default": {}
    },
    "dependencies": {
      "type": "object",
      "additionalProperties": {"anyOf": [{"$ref": "#"}, {"$ref": "#/definitions/stringArray"}]}
    },
    "propertyNames": {"$ref": "#"},
    "const": true,
    "enum": {"type": "array", "items": true, "minItems": 1, "uniqueItems": true},
    "type": {
      "anyOf": [
        {"$ref": "#/definitions/simpleTypes"},
        {
          "type": "array",
          "items": {"$ref": "#/definitions/simpleTypes"},
          "minItems": 1,
          "uniqueItems": true
        }
      ]
    },
    "format": {"type": "string"},
    "contentMediaType": {"type": "string"},
    "contentEncoding": {"type": "string"},
    "if": {"$ref": "#"},
    "then": {"$ref": "#"},
    "else": {"$ref": "#"},
    "allOf": {"$ref": "#/definitions/schemaArray"},
    "anyOf": {"$ref": "#/definitions/schemaArray"},
    "oneOf": {"$ref": "#/definitions/schemaArray"},
    "not": {"$ref": "#"}
  },
  "default": true
})json";

const json& draft07MetaSchema() {
  static const json doc = json::parse(kDraft07MetaSchema);
  return doc;
}

// Stops withDefaults on a schema whose defaults nest forever (a defaulted
// object whose schema defaults the same property again).
constexpr int kMaxDefaultDepth = 32;

constexpr size_t kMaxDescribedChars = 60;

enum TypeBit : unsigned {
  kNullType = 1u << 0,
  kBooleanType = 1u << 1,
  kIntegerType = 1u << 2,
  kNumberType = 1u << 3,
  kStringType = 1u << 4,
  kArrayType = 1u << 5,
  kObjectType = 1u << 6,
};

struct TypeName {
  const char* name;
  const char* with_article;
  unsigned bit;
};

// In the order a message lists them.
constexpr TypeName kTypeNames[] = {
    {"string", "a string", kStringType},  {"integer", "an integer", kIntegerType},
    {"number", "a number", kNumberType},  {"boolean", "a boolean", kBooleanType},
    {"object", "an object", kObjectType}, {"array", "an array", kArrayType},
    {"null", "null", kNullType},
};

// Keywords with no effect on validation; accepted without a warning.
constexpr std::string_view kAnnotations[] = {
    "$schema", "$comment", "title", "description", "examples", "readOnly", "writeOnly",
};

template <size_t N>
bool isOneOf(std::string_view keyword, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), keyword) != std::end(list);
}

// Keywords we implement, so that one beside a $ref can be reported as ignored.
// clang-format off
constexpr std::string_view kImplemented[] = {
    "type", "enum", "const", "default",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern",
    "items", "additionalItems", "minItems", "maxItems", "uniqueItems", "contains",
    "properties", "patternProperties", "additionalProperties", "required", "minProperties",
    "maxProperties", "propertyNames", "dependencies",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
};
// clang-format on

const char* jsonTypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "integer";
    case json::value_t::number_float: return "number";
    case json::value_t::string: return "string";
    case json::value_t::array: return "array";
    case json::value_t::object: return "object";
    default: return "binary";
  }
}

bool isIntegral(const json& v) {
  if (v.is_number_integer()) return true;  // covers unsigned too
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && d == std::trunc(d);
}

unsigned typeBits(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return kNullType;
    case json::value_t::boolean: return kBooleanType;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return kIntegerType | kNumberType;
    case json::value_t::number_float:
      return isIntegral(v) ? (kIntegerType | kNumberType) : kNumberType;
    case json::value_t::string: return kStringType;
    case json::value_t::array: return kArrayType;
    case json::value_t::object: return kObjectType;
    default: return 0;
  }
}

// -1, 0 or 1. Exact for any mix of int64, uint64 and double: x86-64's long
// double holds all of them without rounding.
int compareNumbers(const json& a, const json& b) {
  if (a.is_number_integer() && b.is_number_integer()) {
    const bool a_neg = a.is_number_unsigned() ? false : a.get<int64_t>() < 0;
    const bool b_neg = b.is_number_unsigned() ? false : b.get<int64_t>() < 0;
    if (a_neg != b_neg) return a_neg ? -1 : 1;
    if (a_neg) {
      const int64_t x = a.get<int64_t>(), y = b.get<int64_t>();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    const uint64_t x = a.get<uint64_t>(), y = b.get<uint64_t>();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  const long double x = a.get<long double>(), y = b.get<long double>();
  return x < y ? -1 : (x > y ? 1 : 0);
}

// Rationale: nlohmann's == converts int64 to uint64 when comparing them, so
// -1 == 18446744073709551615; JSON Schema wants mathematical equality.
bool jsonEqual(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return compareNumbers(a, b) == 0;
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!jsonEqual(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end() || !jsonEqual(it.value(), *other)) return false;
    }
    return true;
  }
  return a == b;
}

bool isMultipleOf(const json& value, const json& divisor) {
  if (value.is_number_integer() && divisor.is_number_integer()) {
    const auto magnitude = [](const json& v) -> uint64_t {
      if (v.is_number_unsigned()) return v.get<uint64_t>();
      const int64_t i = v.get<int64_t>();
      return i < 0 ? 0 - static_cast<uint64_t>(i) : static_cast<uint64_t>(i);
    };
    return magnitude(value) % magnitude(divisor) == 0;
  }
  const long double x = std::fabs(value.get<long double>());
  const long double m = std::fabs(divisor.get<long double>());
  const long double r = std::fmod(x, m);
  if (!std::isfinite(r)) return false;
  // Decimal divisors such as 0.01 are inexact in binary; allow a relative slop.
  const long double slop = m * 1e-9L;
  return r <= slop || m - r <= slop;
}

// A value for a message, shortened so that a long const or enum stays readable.
std::string describe(const json& v) {
  std::string s = v.dump();
  if (s.size() > kMaxDescribedChars) s = s.substr(0, kMaxDescribedChars - 3) + "...";
  return s;
}

std::string quote(std::string_view s) {
  return json(s).dump();
}

std::string plural(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// Invalid sequences decode as U+FFFD, one per byte, so that counting and
// matching never fail on them.
std::wstring decodeUtf8(std::string_view s) {
  std::wstring out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    size_t extra = 0;
    char32_t cp = 0;
    if (b0 < 0x80) {
      cp = b0;
    } else if ((b0 & 0xE0) == 0xC0) {
      extra = 1, cp = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
      extra = 2, cp = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
      extra = 3, cp = b0 & 0x07;
    } else {
      out.push_back(L'\uFFFD');
      ++i;
      continue;
    }
    bool ok = i + extra < s.size();
    for (size_t k = 1; ok && k <= extra; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) {
        ok = false;
      } else {
        cp = (cp << 6) | (b & 0x3F);
      }
    }
    if (!ok) {
      out.push_back(L'\uFFFD');
      ++i;
      continue;
    }
    out.push_back(static_cast<wchar_t>(cp));
    i += extra + 1;
  }
  return out;
}

std::string percentDecode(std::string_view s) {
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// "http://x/y#" and "http://x/y" name the same document.
std::string withoutEmptyFragment(std::string_view uri) {
  if (!uri.empty() && uri.back() == '#') uri.remove_suffix(1);
  return std::string(uri);
}

bool isDraft07Uri(std::string_view uri) {
  std::string u = withoutEmptyFragment(uri);
  if (u.rfind("https://", 0) == 0) u.erase(4, 1);
  return u == kDraft07Uri;
}

struct Pattern {
  std::string source;
  std::wregex regex;
};

// One compiled schema location. A Node never owns another: all live in one
// Graph, so $ref cycles are plain pointer cycles.
struct Node {
  std::string location;  // "#/properties/x", for compile errors
  bool is_false = false;
  const Node* ref = nullptr;  // when set, every other keyword is ignored (draft-07)

  unsigned types = 0;  // TypeBit mask; 0 = any type
  std::optional<json> enum_values;
  std::optional<json> const_value;
  std::optional<json> default_value;

  std::optional<json> minimum, maximum, exclusive_minimum, exclusive_maximum, multiple_of;

  std::optional<uint64_t> min_length, max_length;
  std::optional<Pattern> pattern;

  const Node* items = nullptr;  // one schema for every item
  std::optional<std::vector<const Node*>> tuple_items;
  const Node* additional_items = nullptr;
  std::optional<uint64_t> min_items, max_items;
  bool unique_items = false;
  const Node* contains = nullptr;

  std::map<std::string, const Node*> properties;
  std::vector<std::pair<Pattern, const Node*>> pattern_properties;
  const Node* additional_properties = nullptr;
  std::vector<std::string> required;
  std::optional<uint64_t> min_properties, max_properties;
  const Node* property_names = nullptr;
  std::vector<std::pair<std::string, std::vector<std::string>>> property_dependencies;
  std::vector<std::pair<std::string, const Node*>> schema_dependencies;

  std::vector<const Node*> all_of, any_of, one_of;
  const Node* not_schema = nullptr;
  const Node* if_schema = nullptr;
  const Node* then_schema = nullptr;
  const Node* else_schema = nullptr;

  // Schemas applied to the same value as this one; a cycle among them would
  // never terminate, so compile() rejects it.
  std::vector<const Node*> sameValueEdges() const {
    std::vector<const Node*> out;
    if (ref) out.push_back(ref);
    out.insert(out.end(), all_of.begin(), all_of.end());
    out.insert(out.end(), any_of.begin(), any_of.end());
    out.insert(out.end(), one_of.begin(), one_of.end());
    for (const Node* n : {not_schema, if_schema, then_schema, else_schema}) {
      if (n) out.push_back(n);
    }
    for (const auto& [name, n] : schema_dependencies) out.push_back(n);
    return out;
  }
};

// nullopt when std::regex gives up (error_complexity, error_stack), which it
// may do on a long input.
std::optional<bool> search(const Pattern& pattern, const std::wstring& text) {
  try {
    return std::regex_search(text, pattern.regex);
  } catch (const std::regex_error&) {
    return std::nullopt;
  }
}

const Node* followRefs(const Node* node) {
  while (node->ref) node = node->ref;
  return node;
}

// Everything compile() produces; JsonSchema::Impl is this, named privately.
struct Graph {
  std::vector<std::unique_ptr<Node>> nodes;
  const Node* root = nullptr;
  std::vector<std::string> ignored_keywords;
};

// Builds the Node graph for one schema document. Every method that returns
// bool or a pointer sets error_ and returns false / nullptr on failure.
class Compiler {
 public:
  explicit Compiler(Graph* graph) : graph_(graph) {}

  bool run(const json& schema, std::string* error) {
    docs_.push_back({&schema, ""});
    if (schema.is_object()) {
      auto it = schema.find("$schema");
      if (it != schema.end() && !(it->is_string() && isDraft07Uri(it->get<std::string>()))) {
        *error = "unsupported \"$schema\" " + describe(*it) +
                 ": only draft-07 (\"http://json-schema.org/draft-07/schema#\") is supported";
        return false;
      }
      it = schema.find("$id");
      if (it != schema.end() && it->is_string()) {
        const std::string& id = it->get_ref<const std::string&>();
        docs_[0].id = id.substr(0, id.find('#'));
      }
    }
    graph_->root = compileAt(0, Pointer());
    if (!graph_->root || !checkCycles()) {
      *error = error_;
      return false;
    }
    return true;
  }

 private:
  struct Document {
    const json* root;
    std::string id;  // its "$id" without the fragment, "" if none
  };

  std::string locationOf(size_t doc, const Pointer& ptr) const {
    return (doc == 0 ? std::string() : docs_[doc].id) + "#" + ptr.to_string();
  }

  bool fail(const std::string& location, const std::string& message) {
    error_ = "invalid schema at " + location + ": " + message;
    return false;
  }

  void ignore(std::string keyword) {
    if (std::find(graph_->ignored_keywords.begin(), graph_->ignored_keywords.end(), keyword) ==
        graph_->ignored_keywords.end()) {
      graph_->ignored_keywords.push_back(std::move(keyword));
    }
  }

  Node* compileAt(size_t doc, const Pointer& ptr) {
    auto key = std::make_pair(doc, ptr.to_string());
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    const json& schema = docs_[doc].root->at(ptr);
    const std::string location = locationOf(doc, ptr);
    if (!schema.is_object() && !schema.is_boolean()) {
      fail(location,
           std::string("a schema must be an object or a boolean, got ") + jsonTypeName(schema));
      return nullptr;
    }
    graph_->nodes.push_back(std::make_unique<Node>());
    Node* node = graph_->nodes.back().get();
    node->location = location;
    // Registered before its children so that a recursive $ref finds it.
    memo_.emplace(std::move(key), node);
    if (schema.is_boolean()) {
      node->is_false = !schema.get<bool>();
      return node;
    }
    return compileKeywords(node, doc, ptr, schema) ? node : nullptr;
  }

  bool compileKeywords(Node* node, size_t doc, const Pointer& ptr, const json& schema) {
    const std::string& at = node->location;
    const auto child = [&](const char* keyword) -> const Node* {
      return compileAt(doc, ptr / keyword);
    };
    const auto childList = [&](const char* keyword, const json& v,
                               std::vector<const Node*>* out) -> bool {
      if (!v.is_array() || v.empty()) {
        return fail(at, quote(keyword) + " must be a non-empty array of schemas, got " +
                            (v.is_array() ? "an empty array" : jsonTypeName(v)));
      }
      for (size_t i = 0; i < v.size(); ++i) {
        const Node* n = compileAt(doc, ptr / keyword / i);
        if (!n) return false;
        out->push_back(n);
      }
      return true;
    };
    const auto number = [&](const char* keyword, const json& v, std::optional<json>* out) -> bool {
      if (!v.is_number()) {
        return fail(at, quote(keyword) + " must be a number, got " + jsonTypeName(v));
      }
      *out = v;
      return true;
    };
    const auto count = [&](const char* keyword, const json& v,
                           std::optional<uint64_t>* out) -> bool {
      if (!isIntegral(v) || compareNumbers(v, json(0)) < 0) {
        return fail(at, quote(keyword) + " must be a non-negative integer, got " +
                            (v.is_number() ? describe(v) : jsonTypeName(v)));
      }
      if (!v.is_number_float()) {
        *out = v.get<uint64_t>();
      } else {
        // Beyond uint64 is as good as unlimited, and casting it would be undefined.
        const double d = v.get<double>();
        *out = d >= 18446744073709551615.0 ? UINT64_MAX : static_cast<uint64_t>(d);
      }
      return true;
    };
    const auto regex = [&](const std::string& what, const std::string& source,
                           std::optional<Pattern>* out) -> bool {
      try {
        *out = Pattern{source, std::wregex(decodeUtf8(source), std::regex::ECMAScript)};
        return true;
      } catch (const std::regex_error& e) {
        return fail(at, what + " " + quote(source) +
                            " is not a valid ECMAScript regular expression: " + e.what());
      }
    };
    const auto stringList = [&](const std::string& what, const json& v,
                                std::vector<std::string>* out) -> bool {
      if (!v.is_array())
        return fail(at, what + " must be an array of strings, got " + jsonTypeName(v));
      for (const json& s : v) {
        if (!s.is_string()) {
          return fail(at, what + " must be an array of strings, but contains " + describe(s));
        }
        out->push_back(s.get<std::string>());
      }
      return true;
    };

    // definitions are only reached through $ref, but a broken one should fail
    // here, next to the rest of the schema, not when first referenced.
    if (auto it = schema.find("definitions"); it != schema.end()) {
      if (!it->is_object()) {
        return fail(at, std::string("\"definitions\" must be an object, got ") + jsonTypeName(*it));
      }
      for (auto d = it->begin(); d != it->end(); ++d) {
        if (!compileAt(doc, ptr / "definitions" / d.key())) return false;
      }
    }

    if (auto it = schema.find("$ref"); it != schema.end()) {
      if (!it->is_string()) {
        return fail(at, std::string("\"$ref\" must be a string, got ") + jsonTypeName(*it));
      }
      node->ref = resolveRef(doc, at, it->get<std::string>());
      if (!node->ref) return false;
      for (auto kw = schema.begin(); kw != schema.end(); ++kw) {
        const std::string& k = kw.key();
        if (k == "$ref" || k == "definitions" || k == "$id" || isOneOf(k, kAnnotations)) continue;
        ignore(isOneOf(k, kImplemented) ? k + " (beside $ref)" : k);
      }
      return true;
    }

    for (auto kw = schema.begin(); kw != schema.end(); ++kw) {
      const std::string& k = kw.key();
      const json& v = kw.value();
      bool ok = true;
      if (k == "type") {
        const json list = v.is_array() ? v : json::array({v});
        if (list.empty()) return fail(at, "\"type\" must not be an empty array");
        for (const json& t : list) {
          const auto* it = std::find_if(std::begin(kTypeNames), std::end(kTypeNames),
                                        [&](const TypeName& n) { return t == n.name; });
          if (it == std::end(kTypeNames)) {
            return fail(at,
                        "\"type\" must be one of string, integer, number, boolean, "
                        "object, array, null (or an array of them), got " +
                            describe(t));
          }
          node->types |= it->bit;
        }
      } else if (k == "enum") {
        if (!v.is_array() || v.empty()) {
          return fail(at, std::string("\"enum\" must be a non-empty array, got ") +
                              (v.is_array() ? "an empty array" : jsonTypeName(v)));
        }
        node->enum_values = v;
      } else if (k == "const") {
        node->const_value = v;
      } else if (k == "default") {
        node->default_value = v;
      } else if (k == "minimum") {
        ok = number("minimum", v, &node->minimum);
      } else if (k == "maximum") {
        ok = number("maximum", v, &node->maximum);
      } else if (k == "exclusiveMinimum") {
        ok = number("exclusiveMinimum", v, &node->exclusive_minimum);
      } else if (k == "exclusiveMaximum") {
        ok = number("exclusiveMaximum", v, &node->exclusive_maximum);
      } else if (k == "multipleOf") {
        ok = number("multipleOf", v, &node->multiple_of);
        if (ok && compareNumbers(v, json(0)) <= 0) {
          return fail(at, "\"multipleOf\" must be greater than 0, got " + describe(v));
        }
      } else if (k == "minLength") {
        ok = count("minLength", v, &node->min_length);
      } else if (k == "maxLength") {
        ok = count("maxLength", v, &node->max_length);
      } else if (k == "pattern") {
        if (!v.is_string()) {
          return fail(at, std::string("\"pattern\" must be a string, got ") + jsonTypeName(v));
        }
        ok = regex("\"pattern\"", v.get<std::string>(), &node->pattern);
      } else if (k == "items") {
        if (v.is_array()) {
          node->tuple_items.emplace();
          for (size_t i = 0; i < v.size() && ok; ++i) {
            const Node* n = compileAt(doc, ptr / "items" / i);
            ok = n != nullptr;
            node->tuple_items->push_back(n);
          }
        } else {
          ok = (node->items = child("items")) != nullptr;
        }
      } else if (k == "additionalItems") {
        ok = (node->additional_items = child("additionalItems")) != nullptr;
      } else if (k == "minItems") {
        ok = count("minItems", v, &node->min_items);
      } else if (k == "maxItems") {
        ok = count("maxItems", v, &node->max_items);
      } else if (k == "uniqueItems") {
        if (!v.is_boolean()) {
          return fail(at, std::string("\"uniqueItems\" must be a boolean, got ") + jsonTypeName(v));
        }
        node->unique_items = v.get<bool>();
      } else if (k == "contains") {
        ok = (node->contains = child("contains")) != nullptr;
      } else if (k == "properties" || k == "patternProperties") {
        if (!v.is_object()) {
          return fail(at, quote(k) + " must be an object of schemas, got " + jsonTypeName(v));
        }
        for (auto p = v.begin(); p != v.end() && ok; ++p) {
          const Node* n = compileAt(doc, ptr / k / p.key());
          ok = n != nullptr;
          if (ok && k == "properties") {
            node->properties.emplace(p.key(), n);
          } else if (ok) {
            std::optional<Pattern> pattern;
            ok = regex("\"patternProperties\" key", p.key(), &pattern);
            if (ok) node->pattern_properties.emplace_back(std::move(*pattern), n);
          }
        }
      } else if (k == "additionalProperties") {
        ok = (node->additional_properties = child("additionalProperties")) != nullptr;
      } else if (k == "required") {
        ok = stringList("\"required\"", v, &node->required);
      } else if (k == "minProperties") {
        ok = count("minProperties", v, &node->min_properties);
      } else if (k == "maxProperties") {
        ok = count("maxProperties", v, &node->max_properties);
      } else if (k == "propertyNames") {
        ok = (node->property_names = child("propertyNames")) != nullptr;
      } else if (k == "dependencies") {
        if (!v.is_object()) {
          return fail(at,
                      std::string("\"dependencies\" must be an object, got ") + jsonTypeName(v));
        }
        for (auto d = v.begin(); d != v.end() && ok; ++d) {
          if (d->is_array()) {
            std::vector<std::string> names;
            ok = stringList("\"dependencies\" of " + quote(d.key()), *d, &names);
            node->property_dependencies.emplace_back(d.key(), std::move(names));
          } else {
            const Node* n = compileAt(doc, ptr / "dependencies" / d.key());
            ok = n != nullptr;
            node->schema_dependencies.emplace_back(d.key(), n);
          }
        }
      } else if (k == "allOf") {
        ok = childList("allOf", v, &node->all_of);
      } else if (k == "anyOf") {
        ok = childList("anyOf", v, &node->any_of);
      } else if (k == "oneOf") {
        ok = childList("oneOf", v, &node->one_of);
      } else if (k == "not") {
        ok = (node->not_schema = child("not")) != nullptr;
      } else if (k == "if") {
        ok = (node->if_schema = child("if")) != nullptr;
      } else if (k == "then") {
        ok = (node->then_schema = child("then")) != nullptr;
      } else if (k == "else") {
        ok = (node->else_schema = child("else")) != nullptr;
      } else if (k == "definitions") {
        // Compiled above.
      } else if (k == "$id") {
        if (!v.is_string()) {
          return fail(at, std::string("\"$id\" must be a string, got ") + jsonTypeName(v));
        }
        // Only the document's own $id is understood; one inside would change
        // the base URI of the $refs below it.
        if (!ptr.empty()) ignore("$id");
      } else if (!isOneOf(k, kAnnotations)) {
        ignore(k);
      }
      if (!ok) return false;
    }
    return true;
  }

  const Node* resolveRef(size_t doc, const std::string& at, const std::string& ref) {
    const size_t hash = ref.find('#');
    const std::string base = ref.substr(0, hash);
    const std::string fragment =
        percentDecode(hash == std::string::npos ? "" : ref.substr(hash + 1));
    size_t target = doc;
    if (!base.empty() && base != docs_[doc].id) {
      if (isDraft07Uri(base)) {
        target = draft07Doc();
      } else {
        fail(at, "$ref " + quote(ref) +
                     " cannot be resolved: only references within this schema (\"#/...\") "
                     "and to the draft-07 meta-schema are supported");
        return nullptr;
      }
    }
    if (!fragment.empty() && fragment[0] != '/') {
      fail(at, "$ref " + quote(ref) +
                   " cannot be resolved: only JSON-pointer fragments (\"#/...\") are supported");
      return nullptr;
    }
    Pointer ptr;
    try {
      ptr = Pointer(fragment);
      if (!docs_[target].root->contains(ptr)) {
        fail(at, "$ref " + quote(ref) + " cannot be resolved: nothing at " + quote(fragment));
        return nullptr;
      }
    } catch (const json::exception& e) {
      fail(at, "$ref " + quote(ref) + " is not a valid JSON pointer: " + e.what());
      return nullptr;
    }
    return compileAt(target, ptr);
  }

  size_t draft07Doc() {
    for (size_t i = 0; i < docs_.size(); ++i) {
      if (docs_[i].root == &draft07MetaSchema()) return i;
    }
    docs_.push_back({&draft07MetaSchema(), std::string(kDraft07Uri)});
    return docs_.size() - 1;
  }

  bool checkCycles() {
    enum class Mark { kNew, kActive, kDone };
    std::map<const Node*, Mark> marks;
    std::vector<const Node*> stack;
    // Depth-first over same-value edges; an edge back to an active node is a
    // cycle that would recurse without ever descending into the value.
    std::function<bool(const Node*)> visit = [&](const Node* n) -> bool {
      marks[n] = Mark::kActive;
      stack.push_back(n);
      for (const Node* next : n->sameValueEdges()) {
        const Mark m = marks.count(next) ? marks[next] : Mark::kNew;
        if (m == Mark::kActive) {
          std::string chain;
          auto from = std::find(stack.begin(), stack.end(), next);
          for (auto it = from; it != stack.end(); ++it) chain += (*it)->location + " -> ";
          return fail(next->location,
                      "reference cycle that never reaches a value: " + chain + next->location);
        }
        if (m == Mark::kNew && !visit(next)) return false;
      }
      stack.pop_back();
      marks[n] = Mark::kDone;
      return true;
    };
    for (const auto& n : graph_->nodes) {
      if (!marks.count(n.get()) && !visit(n.get())) return false;
    }
    return true;
  }

  Graph* graph_;
  std::vector<Document> docs_;
  std::map<std::pair<size_t, std::string>, Node*> memo_;
  std::string error_;
};

// A path token is an array index or an object member name; the variant's
// order (index < name) never matters since siblings share a kind.
using PathToken = std::variant<size_t, std::string>;

struct Violation {
  std::vector<PathToken> path;
  std::string message;
};

std::string toPointer(const std::vector<PathToken>& path) {
  std::string out;
  for (const PathToken& t : path) {
    out += '/';
    if (const size_t* i = std::get_if<size_t>(&t)) {
      out += std::to_string(*i);
    } else {
      for (char c : std::get<std::string>(t)) {
        if (c == '~') {
          out += "~0";
        } else if (c == '/') {
          out += "~1";
        } else {
          out += c;
        }
      }
    }
  }
  return out;
}

void sortByDocumentOrder(std::vector<Violation>* violations) {
  // Stable: violations at one location keep the order their keywords ran in.
  std::stable_sort(violations->begin(), violations->end(),
                   [](const Violation& a, const Violation& b) { return a.path < b.path; });
}

class Validator {
 public:
  // A quick validator only answers "valid or not": it stops at the first
  // violation and leaves its messages unread.
  explicit Validator(bool quick) : quick_(quick) {}

  void validate(const Node* node, const json& v, std::vector<Violation>* out) {
    node = followRefs(node);
    if (node->is_false) return report(out, "no value is allowed here");
    if (node->types && !(node->types & typeBits(v))) {
      report(out, "must be " + typeList(node->types) + ", got " + jsonTypeName(v));
      if (quick_) return;
    }
    if (node->enum_values) checkEnum(*node, v, out);
    if (node->const_value && !jsonEqual(*node->const_value, v)) {
      report(out, "must be equal to " + describe(*node->const_value));
    }
    if (stopped(out)) return;
    if (v.is_number()) checkNumber(*node, v, out);
    if (v.is_string()) checkString(*node, v.get_ref<const std::string&>(), out);
    if (v.is_array()) checkArray(*node, v, out);
    if (v.is_object()) checkObject(*node, v, out);
    if (stopped(out)) return;
    checkCombinators(*node, v, out);
  }

 private:
  bool stopped(const std::vector<Violation>* out) const { return quick_ && !out->empty(); }

  void report(std::vector<Violation>* out, std::string message) {
    out->push_back({path_, std::move(message)});
  }

  template <typename Token>
  void validateChild(const Node* node, Token token, const json& v, std::vector<Violation>* out) {
    path_.emplace_back(std::move(token));
    validate(node, v, out);
    path_.pop_back();
  }

  static bool matches(const Node* node, const json& v) {
    std::vector<Violation> out;
    Validator(true).validate(node, v, &out);
    return out.empty();
  }

  static std::string typeList(unsigned types) {
    std::vector<std::string> names;
    for (const TypeName& t : kTypeNames) {
      // "integer" is redundant next to "number".
      if ((types & t.bit) && !(t.bit == kIntegerType && (types & kNumberType))) {
        names.push_back(t.with_article);
      }
    }
    std::string out;
    for (size_t i = 0; i < names.size(); ++i) {
      if (i > 0) out += i + 1 == names.size() ? " or " : ", ";
      out += names[i];
    }
    return out;
  }

  void checkEnum(const Node& node, const json& v, std::vector<Violation>* out) {
    for (const json& candidate : *node.enum_values) {
      if (jsonEqual(candidate, v)) return;
    }
    std::string list;
    for (const json& candidate : *node.enum_values) {
      if (!list.empty()) list += ", ";
      list += describe(candidate);
    }
    report(out, (node.enum_values->size() == 1 ? "must be " : "must be one of ") + list);
  }

  void checkNumber(const Node& node, const json& v, std::vector<Violation>* out) {
    const auto bound = [&](const std::optional<json>& limit, const char* op, bool ok) {
      if (!ok) {
        report(out, std::string("must be ") + op + " " + describe(*limit) + ", got " + describe(v));
      }
    };
    if (node.minimum) bound(node.minimum, ">=", compareNumbers(v, *node.minimum) >= 0);
    if (node.exclusive_minimum) {
      bound(node.exclusive_minimum, ">", compareNumbers(v, *node.exclusive_minimum) > 0);
    }
    if (node.maximum) bound(node.maximum, "<=", compareNumbers(v, *node.maximum) <= 0);
    if (node.exclusive_maximum) {
      bound(node.exclusive_maximum, "<", compareNumbers(v, *node.exclusive_maximum) < 0);
    }
    if (node.multiple_of && !isMultipleOf(v, *node.multiple_of)) {
      report(out, "must be a multiple of " + describe(*node.multiple_of) + ", got " + describe(v));
    }
  }

  // The value is not echoed: a string option may hold a secret.
  void checkString(const Node& node, const std::string& s, std::vector<Violation>* out) {
    if (!node.min_length && !node.max_length && !node.pattern) return;
    const std::wstring text = decodeUtf8(s);
    if (node.min_length && text.size() < *node.min_length) {
      report(out, "must be at least " + plural(*node.min_length, "character", "characters") +
                      " long, got " + std::to_string(text.size()));
    }
    if (node.max_length && text.size() > *node.max_length) {
      report(out, "must be at most " + plural(*node.max_length, "character", "characters") +
                      " long, got " + std::to_string(text.size()));
    }
    if (node.pattern) {
      const std::optional<bool> found = search(*node.pattern, text);
      if (!found) {
        report(out, "could not be checked against the pattern " + quote(node.pattern->source) +
                        ": the regular expression engine gave up");
      } else if (!*found) {
        report(out, "must match the pattern " + quote(node.pattern->source));
      }
    }
  }

  void checkArray(const Node& node, const json& v, std::vector<Violation>* out) {
    const size_t n = v.size();
    if (node.min_items && n < *node.min_items) {
      report(out, "must have at least " + plural(*node.min_items, "item", "items") + ", got " +
                      std::to_string(n));
    }
    if (node.max_items && n > *node.max_items) {
      report(out, "must have at most " + plural(*node.max_items, "item", "items") + ", got " +
                      std::to_string(n));
    }
    if (node.items) {
      for (size_t i = 0; i < n && !stopped(out); ++i) validateChild(node.items, i, v[i], out);
    } else if (node.tuple_items) {
      const std::vector<const Node*>& tuple = *node.tuple_items;
      for (size_t i = 0; i < n && i < tuple.size(); ++i) validateChild(tuple[i], i, v[i], out);
      if (node.additional_items && n > tuple.size()) {
        if (node.additional_items->is_false) {
          report(out, "must have at most " + plural(tuple.size(), "item", "items") +
                          " (additionalItems is false), got " + std::to_string(n));
        } else {
          for (size_t i = tuple.size(); i < n && !stopped(out); ++i) {
            validateChild(node.additional_items, i, v[i], out);
          }
        }
      }
    }
    if (node.unique_items) {
      for (size_t i = 1; i < n && !stopped(out); ++i) {
        for (size_t j = 0; j < i; ++j) {
          if (jsonEqual(v[i], v[j])) {
            path_.emplace_back(i);
            report(out, "duplicate of item " + std::to_string(j) + " (items must be unique)");
            path_.pop_back();
            break;
          }
        }
      }
    }
    if (node.contains) {
      bool found = false;
      for (size_t i = 0; i < n && !found; ++i) found = matches(node.contains, v[i]);
      if (!found) {
        report(out, "must contain at least one item that matches the \"contains\" schema");
      }
    }
  }

  void checkObject(const Node& node, const json& v, std::vector<Violation>* out) {
    for (const std::string& name : node.required) {
      if (!v.contains(name)) report(out, "missing required property " + quote(name));
    }
    if (node.min_properties && v.size() < *node.min_properties) {
      report(out, "must have at least " + plural(*node.min_properties, "property", "properties") +
                      ", got " + std::to_string(v.size()));
    }
    if (node.max_properties && v.size() > *node.max_properties) {
      report(out, "must have at most " + plural(*node.max_properties, "property", "properties") +
                      ", got " + std::to_string(v.size()));
    }
    for (const auto& [name, needed] : node.property_dependencies) {
      if (!v.contains(name)) continue;
      for (const std::string& other : needed) {
        if (!v.contains(other)) {
          report(out, "property " + quote(name) + " requires property " + quote(other));
        }
      }
    }
    for (const auto& [name, schema] : node.schema_dependencies) {
      if (v.contains(name)) validate(schema, v, out);
    }
    if (stopped(out)) return;
    for (auto it = v.begin(); it != v.end() && !stopped(out); ++it) {
      const std::string& name = it.key();
      if (node.property_names) checkPropertyName(node.property_names, name, out);
      bool known = false;
      if (auto p = node.properties.find(name); p != node.properties.end()) {
        known = true;
        validateChild(p->second, name, *it, out);
      }
      const std::wstring wide = node.pattern_properties.empty() ? L"" : decodeUtf8(name);
      for (const auto& [pattern, schema] : node.pattern_properties) {
        const std::optional<bool> found = search(pattern, wide);
        if (!found) {
          known = true;  // unknown to us, so not reported as an unknown property
          path_.emplace_back(name);
          report(out, "property name could not be checked against the pattern " +
                          quote(pattern.source) + ": the regular expression engine gave up");
          path_.pop_back();
        } else if (*found) {
          known = true;
          validateChild(schema, name, *it, out);
        }
      }
      if (known || !node.additional_properties) continue;
      if (node.additional_properties->is_false) {
        path_.emplace_back(name);
        report(out, unknownProperty(node, name));
        path_.pop_back();
      } else {
        validateChild(node.additional_properties, name, *it, out);
      }
    }
  }

  void checkPropertyName(const Node* schema, const std::string& name, std::vector<Violation>* out) {
    std::vector<Violation> found;
    Validator(quick_).validate(schema, json(name), &found);
    for (Violation& violation : found) {
      path_.emplace_back(name);
      report(out, "property name " + quote(name) + " is invalid: " + violation.message);
      path_.pop_back();
    }
  }

  static std::string unknownProperty(const Node& node, const std::string& name) {
    std::vector<std::string> names;
    for (const auto& [known, schema] : node.properties) names.push_back(known);
    std::vector<std::string> allowed = names;
    for (const auto& [pattern, schema] : node.pattern_properties) {
      allowed.push_back("names matching " + quote(pattern.source));
    }
    std::string message = "unknown property " + quote(name);
    if (allowed.empty()) return message + " (no properties are allowed here)";
    message += " (allowed: " + internal::joinNames(allowed) + ")";
    if (auto guess = internal::nearest(name, names)) {
      message += ", did you mean " + quote(*guess) + "?";
    }
    return message;
  }

  void checkCombinators(const Node& node, const json& v, std::vector<Violation>* out) {
    for (const Node* schema : node.all_of) validate(schema, v, out);
    if (!node.any_of.empty()) {
      const bool any = std::any_of(node.any_of.begin(), node.any_of.end(),
                                   [&](const Node* n) { return matches(n, v); });
      if (!any) {
        report(out, "must match at least one of the \"anyOf\" schemas" +
                        whyNot("anyOf", node.any_of, v));
      }
    }
    if (!node.one_of.empty()) {
      std::vector<size_t> matched;
      for (size_t i = 0; i < node.one_of.size(); ++i) {
        if (matches(node.one_of[i], v)) matched.push_back(i);
      }
      if (matched.empty()) {
        report(out,
               "must match exactly one of the \"oneOf\" schemas" + whyNot("oneOf", node.one_of, v));
      } else if (matched.size() > 1) {
        report(out, "must match exactly one of the \"oneOf\" schemas, but matches oneOf/" +
                        std::to_string(matched[0]) + " and oneOf/" + std::to_string(matched[1]));
      }
    }
    if (node.not_schema && matches(node.not_schema, v)) {
      report(out, "must not match the \"not\" schema");
    }
    if (node.if_schema) {
      const Node* branch = matches(node.if_schema, v) ? node.then_schema : node.else_schema;
      if (branch) validate(branch, v, out);
    }
  }

  // ": oneOf/0: must be a string, got integer; oneOf/1 at /x: ...", the first
  // violation of each alternative, so the user sees how close each one was.
  std::string whyNot(const char* keyword, const std::vector<const Node*>& alternatives,
                     const json& v) const {
    if (quick_) return "";
    std::string out;
    for (size_t i = 0; i < alternatives.size(); ++i) {
      std::vector<Violation> found;
      Validator(false).validate(alternatives[i], v, &found);
      if (found.empty()) continue;
      sortByDocumentOrder(&found);
      out += (out.empty() ? ": " : "; ") + std::string(keyword) + "/" + std::to_string(i);
      if (!found[0].path.empty()) out += " at " + toPointer(found[0].path);
      out += ": " + found[0].message;
    }
    return out;
  }

  bool quick_;
  std::vector<PathToken> path_;
};

void applyDefaults(const Node* node, json* value, int defaulted_depth) {
  node = followRefs(node);
  if (node->is_false) return;
  if (value->is_object()) {
    for (const auto& [name, child] : node->properties) {
      const Node* schema = followRefs(child);
      auto it = value->find(name);
      int depth = defaulted_depth;
      if (it == value->end()) {
        if (!schema->default_value || defaulted_depth >= kMaxDefaultDepth) continue;
        it = value->emplace(name, *schema->default_value).first;
        ++depth;
      }
      applyDefaults(schema, &*it, depth);
    }
  }
  for (const Node* schema : node->all_of) applyDefaults(schema, value, defaulted_depth);
}

}  // namespace

struct JsonSchema::Impl : Graph {};

std::optional<JsonSchema> JsonSchema::compile(const nlohmann::json& schema, std::string* error) {
  auto impl = std::make_shared<Impl>();
  std::string message;
  if (!Compiler(impl.get()).run(schema, &message)) {
    if (error) *error = message;
    return std::nullopt;
  }
  JsonSchema compiled;
  compiled.impl_ = std::move(impl);
  return compiled;
}

std::vector<SchemaViolation> JsonSchema::validate(const nlohmann::json& instance) const {
  std::vector<SchemaViolation> result;
  if (!impl_) return result;
  std::vector<Violation> found;
  Validator(false).validate(impl_->root, instance, &found);
  sortByDocumentOrder(&found);
  result.reserve(found.size());
  for (Violation& v : found) result.push_back({toPointer(v.path), std::move(v.message)});
  return result;
}

nlohmann::json JsonSchema::withDefaults(const nlohmann::json& instance) const {
  nlohmann::json out = instance;
  if (impl_) applyDefaults(impl_->root, &out, 0);
  return out;
}

const std::vector<std::string>& JsonSchema::ignoredKeywords() const {
  static const std::vector<std::string> kNone;
  return impl_ ? impl_->ignored_keywords : kNone;
}

}  // namespace kiln::config
