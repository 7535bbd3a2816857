// Schema-driven YAML configuration, shared by the training programs (ctsr_train's train/config.h,
// ctsr_train_vqae's train/vqae_config.h): every key is a Field bound to one member of a
// configuration object, with its type in words, a reader and a writer.
//
// Reading walks the YAML mappings: a leaf (scalar, sequence or null) is the value of the dotted
// key of its path ("training.batch_size"). An unknown key is an error naming the source and the
// key, with the nearest known key when one is close ("did you mean ..."); a value of the wrong
// type names the key, the value and the expected type. Overrides ("--set key=value") parse the
// value as YAML and go through the same fields. Writing emits every field, grouped by its first
// dotted part, in the schema's order, so the resolved file reads back to the same values.
#pragma once

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "runtime/formats/volume.h"

namespace ctsr::config {

struct Field {
  std::string key;
  std::string expected;                         // the type in words, for errors
  std::function<void(const YAML::Node&)> set;   // throws YAML::Exception (or ctsr::Error) on a bad value
  std::function<void(YAML::Emitter&)> emit;
};

template <class T>
Field scalar_field(const std::string& key, T& value, const char* expected) {
  return {key, expected,
          [&value](const YAML::Node& n) {
            if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
            value = n.as<T>();
          },
          [&value](YAML::Emitter& e) { e << value; }};
}

Field int_field(const std::string& key, int64_t& v);
Field uint_field(const std::string& key, uint64_t& v);
Field bool_field(const std::string& key, bool& v);
Field string_field(const std::string& key, std::string& v);
Field double_field(const std::string& key, double& v);  // written with 17 digits: reads back exactly
Field bool_list_field(const std::string& key, std::vector<bool>& v);
// A HU window written [low, high] (two numbers).
Field hu_window_field(const std::string& key, io::HuWindow& w);

template <class T>
Field list_field(const std::string& key, std::vector<T>& v, const char* expected) {
  return {key, expected,
          [&v](const YAML::Node& n) {
            if (!n.IsSequence()) throw YAML::BadConversion(n.Mark());
            std::vector<T> out;
            for (const auto& item : n) {
              if (!item.IsScalar()) throw YAML::BadConversion(item.Mark());
              out.push_back(item.as<T>());
            }
            v = out;
          },
          [&v](YAML::Emitter& e) {
            e << YAML::Flow << YAML::BeginSeq;
            for (const auto& x : v) e << static_cast<T>(x);
            e << YAML::EndSeq;
          }};
}

// An enumeration kept as its enum, read and written through its names.
template <class E>
Field choice_field(const std::string& key, E& v, E (*parse)(const std::string&), const char* (*name)(E),
                   const char* expected) {
  return {key, expected,
          [&v, parse](const YAML::Node& n) {
            if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
            v = parse(n.as<std::string>());
          },
          [&v, name](YAML::Emitter& e) { e << name(v); }};
}

// Where the keys are documented, for the unknown-key message: "(the keys are listed in <where>)".
struct Schema {
  std::vector<Field> fields;
  std::string keys_listed_in;  // e.g. "configs/diffusion.yaml"
};

// The YAML of a file: "<path>: no such configuration file" or "<path>: not valid YAML: ..." on failure.
YAML::Node load_yaml_file(const std::filesystem::path& path);
// The YAML of a text (a configuration stored in a checkpoint); `source` names it in errors.
YAML::Node load_yaml_text(const std::string& text, const std::string& source);
// Sets every key of `root` (null: nothing) through the schema; errors are prefixed with `source`.
void read_yaml(const YAML::Node& root, const std::string& source, const Schema& schema);
// A configuration file: load_yaml_file, read_yaml, then `check` (the combinations), whose error
// is prefixed with the path.
void read_config_file(const std::filesystem::path& path, const Schema& schema, const std::function<void()>& check);
// One "dotted.key=value" override; errors name "--set <assignment>".
void apply_assignment(const std::string& assignment, const Schema& schema);
// Every field, as a YAML document ending in a newline.
std::string emit_yaml(const Schema& schema);
// The dotted keys, in schema order.
std::vector<std::string> keys_of(const Schema& schema);

}  // namespace ctsr::config
