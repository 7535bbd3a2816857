// Runs a ctsr program as a user would, for tests of exit codes, messages and files left behind.
#pragma once

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace ctsr::test {

struct ToolResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

// name: "ctsr_vqae"; args are quoted for the shell.
inline ToolResult run_tool(const std::string& name, const std::vector<std::string>& args) {
  std::string command = shell_quote(std::string(CTSR_TOOLS_BIN_DIR) + "/" + name);
  for (const auto& a : args) {
    // Appended piecewise: `" " + shell_quote(a)` trips GCC 12's -Wrestrict false positive at -O3.
    command += ' ';
    command += shell_quote(a);
  }
  command += " 2>&1";
  ToolResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// A program started in the background with its output going to a file, for tests that must act
// while it runs (signal a process of it, wait with a deadline).
struct Spawned {
  pid_t pid = -1;
};
inline Spawned spawn_program(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  Spawned s;
  s.pid = ::fork();
  if (s.pid == 0) {
    ::setpgid(0, 0);  // its own process group, so a test can end everything it started
    FILE* out = std::fopen(log.c_str(), "w");
    if (out) {
      ::dup2(::fileno(out), 1);
      ::dup2(::fileno(out), 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return s;
}
// The exit status, or -1 when it has not ended within `seconds` (then its group is killed).
inline int wait_for(const Spawned& s, double seconds) {
  for (int waited_ms = 0; waited_ms < int(seconds * 1000); waited_ms += 50) {
    int status = 0;
    if (::waitpid(s.pid, &status, WNOHANG) == s.pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    ::usleep(50 * 1000);
  }
  ::kill(-s.pid, SIGKILL);
  int status = 0;
  ::waitpid(s.pid, &status, 0);
  return -1;
}
inline std::string read_text(const std::filesystem::path& path) {
  std::string text;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    std::array<char, 4096> buffer;
    size_t n;
    while ((n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0) text.append(buffer.data(), n);
    std::fclose(f);
  }
  return text;
}

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("ctsr-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  // Every entry in the directory (names), for "nothing was left behind" checks.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path_)) names.push_back(e.path().filename().string());
    return names;
  }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::filesystem::path path_;
};

}  // namespace ctsr::test
