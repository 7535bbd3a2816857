#include "train/config_schema.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "model/yaml_load.h"
#include "runtime/error.h"

namespace ctsr::config {

Field int_field(const std::string& key, int64_t& v) { return scalar_field(key, v, "an integer"); }
Field uint_field(const std::string& key, uint64_t& v) { return scalar_field(key, v, "a non-negative integer"); }
Field bool_field(const std::string& key, bool& v) { return scalar_field(key, v, "true or false"); }
Field string_field(const std::string& key, std::string& v) { return scalar_field(key, v, "a string"); }

Field double_field(const std::string& key, double& v) {
  Field f = scalar_field(key, v, "a number");
  // Full precision, so the resolved configuration reads back to the same doubles.
  f.emit = [&v](YAML::Emitter& e) {
    std::ostringstream s;
    s.precision(17);
    s << v;
    std::string text = s.str();
    if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
    e << text;
  };
  return f;
}

Field hu_window_field(const std::string& key, io::HuWindow& w) {
  return {key, "[low, high] (two numbers)",
          [&w](const YAML::Node& n) {
            if (!n.IsSequence() || n.size() != 2 || !n[0].IsScalar() || !n[1].IsScalar())
              throw YAML::BadConversion(n.Mark());
            w.lo = n[0].as<float>();
            w.hi = n[1].as<float>();
          },
          [&w](YAML::Emitter& e) { e << YAML::Flow << YAML::BeginSeq << w.lo << w.hi << YAML::EndSeq; }};
}

Field bool_list_field(const std::string& key, std::vector<bool>& v) {
  return {key, "a list of true/false",
          [&v](const YAML::Node& n) {
            if (!n.IsSequence()) throw YAML::BadConversion(n.Mark());
            std::vector<bool> out;
            for (const auto& item : n) out.push_back(item.as<bool>());
            v = out;
          },
          [&v](YAML::Emitter& e) {
            e << YAML::Flow << YAML::BeginSeq;
            for (bool x : v) e << x;
            e << YAML::EndSeq;
          }};
}

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

[[noreturn]] void unknown_key(const std::string& source, const std::string& key, const Schema& schema) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const Field& f : schema.fields) {
    const size_t dist = edit_distance(key, f.key);
    if (dist < best_distance) best_distance = dist, best = f.key;
  }
  if (best_distance <= std::max<size_t>(3, key.size() / 4))
    CTSR_FAIL(source, ": unknown key '", key, "' (did you mean '", best, "'?)");
  CTSR_FAIL(source, ": unknown key '", key, "' (the keys are listed in ", schema.keys_listed_in, ")");
}

void set_value(const std::string& source, const std::string& key, const YAML::Node& value, const Schema& schema) {
  for (const Field& f : schema.fields) {
    if (f.key != key) continue;
    try {
      f.set(value);
    } catch (const YAML::Exception&) {
      std::string shown = YAML::Dump(value);
      std::replace(shown.begin(), shown.end(), '\n', ' ');
      CTSR_FAIL(source, ": '", key, "' is '", shown, "', expected ", f.expected);
    } catch (const Error& e) {
      CTSR_FAIL(source, ": '", key, "': ", e.what());
    }
    return;
  }
  unknown_key(source, key, schema);
}

// Walks a mapping; leaves (scalars, sequences, nulls) are values of dotted keys. One dotted key
// reached twice (a section's key and the same key written dotted at the top) is an error naming
// both places, like a key given twice in one mapping (which the strict loader refuses).
void read_node(const std::string& source, const YAML::Node& node, const std::string& prefix, const Schema& schema,
               std::map<std::string, std::string>& places) {
  for (const auto& kv : node) {
    const std::string key = prefix + kv.first.Scalar();
    if (kv.second.IsMap()) {
      read_node(source, kv.second, key + ".", schema, places);
      continue;
    }
    auto [it, fresh] = places.emplace(key, yaml_position(kv.first));
    CTSR_CHECK(fresh, source, ": '", key, "' is given twice (at ", it->second, " and at ", yaml_position(kv.first),
               "); keep one of them");
    set_value(source, key, kv.second, schema);
  }
}

}  // namespace

YAML::Node load_yaml_file(const std::filesystem::path& path) {
  CTSR_CHECK(std::filesystem::is_regular_file(path), path.string(), ": no such configuration file");
  return load_yaml_file_strict(path);
}

YAML::Node load_yaml_text(const std::string& text, const std::string& source) {
  return load_yaml_text_strict(text, source, "the stored configuration is not valid YAML");
}

void read_yaml(const YAML::Node& root, const std::string& source, const Schema& schema) {
  if (root.IsNull()) return;
  CTSR_CHECK(root.IsMap(), source, ": the configuration must be a YAML mapping of sections (model:, training:, ...)");
  std::map<std::string, std::string> places;
  read_node(source, root, "", schema, places);
}

void read_config_file(const std::filesystem::path& path, const Schema& schema, const std::function<void()>& check) {
  const std::string source = path.string();
  read_yaml(load_yaml_file(path), source, schema);
  try {
    check();
  } catch (const Error& e) {
    CTSR_FAIL(source, ": ", e.what());
  }
}

void apply_assignment(const std::string& assignment, const Schema& schema) {
  const size_t eq = assignment.find('=');
  const std::string source = "--set " + assignment;
  CTSR_CHECK(eq != std::string::npos && eq > 0, source, ": expected key=value (for example training.max_steps=200)");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  const YAML::Node value = load_yaml_text_strict(text, source, "the value '" + text + "' is not valid YAML");
  set_value(source, key, value, schema);
}

std::string emit_yaml(const Schema& schema) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  std::string section;
  for (const Field& f : schema.fields) {
    const size_t dot = f.key.find('.');
    const std::string s = dot == std::string::npos ? "" : f.key.substr(0, dot);
    if (s != section) {
      if (!section.empty()) e << YAML::EndMap;
      if (!s.empty()) e << YAML::Key << s << YAML::Value << YAML::BeginMap;
      section = s;
    }
    e << YAML::Key << (dot == std::string::npos ? f.key : f.key.substr(dot + 1)) << YAML::Value;
    f.emit(e);
  }
  if (!section.empty()) e << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::vector<std::string> keys_of(const Schema& schema) {
  std::vector<std::string> keys;
  for (const Field& f : schema.fields) keys.push_back(f.key);
  return keys;
}

}  // namespace ctsr::config
