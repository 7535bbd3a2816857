// Loading YAML settings files (training configurations, the VQ-AE's settings) strictly: beyond
// yaml-cpp's parsing, every mapping key must be a scalar given once (yaml-cpp keeps both of two
// equal keys and a lookup then silently takes one of them), and nesting deeper than yaml-cpp's
// recursion limit gets a message saying so. Every error names the source and the line.
#pragma once

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <string>

namespace ctsr {

// `what` describes the text in errors, e.g. "not valid YAML" or "the stored configuration is not
// valid YAML"; errors read "<source>: <what>: <cause>".
YAML::Node load_yaml_file_strict(const std::filesystem::path& path, const std::string& what = "not valid YAML");
YAML::Node load_yaml_text_strict(const std::string& text, const std::string& source,
                                 const std::string& what = "not valid YAML");

// "line L, column C" of a node (1-based), for messages.
std::string yaml_position(const YAML::Node& node);

}  // namespace ctsr
