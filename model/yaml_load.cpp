#include "model/yaml_load.h"

#include <yaml-cpp/depthguard.h>

#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime/error.h"

namespace ctsr {

namespace {

// Walks every mapping of the document, without recursion (the document may be as deep as
// yaml-cpp allows), refusing a non-scalar key and a key given twice in one mapping. A collection
// reached again through an alias is walked once (it is one node, found by its position), so
// aliases of aliases cannot make the walk exponential.
void check_keys(const YAML::Node& root, const std::string& source, const std::string& what) {
  std::vector<YAML::Node> pending{root};
  std::unordered_set<int> walked;  // Mark().pos of the collections seen
  while (!pending.empty()) {
    const YAML::Node node = pending.back();
    pending.pop_back();
    if ((node.IsSequence() || node.IsMap()) && !node.Mark().is_null() && !walked.insert(node.Mark().pos).second)
      continue;
    if (node.IsSequence()) {
      for (const YAML::Node& item : node) pending.push_back(item);
    } else if (node.IsMap()) {
      std::unordered_map<std::string, YAML::Node> seen;
      for (const auto& kv : node) {
        CTSR_CHECK(kv.first.IsScalar(), source, ": ", what, ": a mapping key at ", yaml_position(kv.first),
                   " is a ", kv.first.IsMap() ? "mapping" : kv.first.IsSequence() ? "sequence" : "null",
                   "; expected a name");
        const std::string key = kv.first.Scalar();
        auto [it, fresh] = seen.emplace(key, kv.first);
        CTSR_CHECK(fresh, source, ": ", what, ": key '", key, "' appears twice in one mapping (at ",
                   yaml_position(it->second), " and at ", yaml_position(kv.first), "); keep one of them");
        pending.push_back(kv.second);
      }
    }
  }
}

YAML::Node parse(std::istream& in, const std::string& source, const std::string& what) {
  YAML::Node root;
  try {
    root = YAML::Load(in);
  } catch (const YAML::DeepRecursion& e) {
    CTSR_FAIL(source, ": ", what, ": it nests deeper than ", e.depth(), " levels (at line ", e.mark.line + 1,
              ", column ", e.mark.column + 1, "); a settings file is sections of keys a few levels deep");
  } catch (const YAML::Exception& e) {
    CTSR_FAIL(source, ": ", what, ": ", e.what());
  }
  check_keys(root, source, what);
  return root;
}

}  // namespace

std::string yaml_position(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return "an unknown place";
  return "line " + std::to_string(mark.line + 1) + ", column " + std::to_string(mark.column + 1);
}

YAML::Node load_yaml_file_strict(const std::filesystem::path& path, const std::string& what) {
  const std::string source = path.string();
  std::ifstream in(path, std::ios::binary);
  CTSR_CHECK(in.good(), source, ": cannot open the file for reading");
  return parse(in, source, what);
}

YAML::Node load_yaml_text_strict(const std::string& text, const std::string& source, const std::string& what) {
  std::istringstream in(text);
  return parse(in, source, what);
}

}  // namespace ctsr
