// The terminal progress bar of tools/common/progress.h: silence when disabled, the rate limit on a
// fake clock, the ETA and duration texts, finish()'s one newline, and the 79-column limit.
#include <algorithm>
#include <sstream>
#include <string>

#include "tests/harness.h"
#include "tools/common/progress.h"

namespace ctsr::test {
namespace {

using tools::format_duration;
using tools::ProgressBar;

// A clock the test moves by hand.
struct FakeClock {
  double now = 100.0;  // not 0: elapsed time must count from the bar's construction
  std::function<double()> fn() {
    return [this] { return now; };
  }
};

int count_char(const std::string& s, char c) { return static_cast<int>(std::count(s.begin(), s.end(), c)); }

// The lines as a terminal would show them: each '\r'-separated draw (without the leading '\r').
std::vector<std::string> draws(const std::string& text) {
  std::vector<std::string> out;
  std::string current;
  bool open = false;
  for (char c : text) {
    if (c == '\r' || c == '\n') {
      if (open) out.push_back(current);
      current.clear();
      open = c == '\r';
    } else {
      current += c;
    }
  }
  if (open) out.push_back(current);
  return out;
}

TEST(ProgressBar, DisabledWritesNothing) {
  std::ostringstream out;
  FakeClock clock;
  {
    ProgressBar bar(out, false, clock.fn());
    bar.update("encode", 0.0);
    clock.now += 1.0;
    bar.update("decode", 0.5);
    bar.update("decode", 1.0);
    bar.finish();
    bar.finish();
  }  // and the destructor
  EXPECT_EQ(out.str(), "");
}

TEST(ProgressBar, DrawsTheDocumentedLine) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar bar(out, true, clock.fn());
  clock.now += 37.0;
  bar.update("encode", 0.42);
  // 42% after 37 s: ETA 37 * 0.58 / 0.42 = 51.1 s; 8 of 20 cells.
  EXPECT_EQ(out.str(), "\rencode [########............] 42% 0:37 elapsed, ETA 0:51");
}

TEST(ProgressBar, RateLimitedButALabelChangeDraws) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar bar(out, true, clock.fn());
  bar.update("sample step 1/20", 0.10);
  clock.now += 0.1;
  bar.update("sample step 1/20", 0.11);  // 0.1 s later, same label: not drawn
  EXPECT_EQ(count_char(out.str(), '\r'), 1);
  EXPECT_EQ(out.str().find("11%"), std::string::npos);
  clock.now += 0.1;
  bar.update("sample step 2/20", 0.12);  // 0.2 s after the first draw, but a new label: drawn
  EXPECT_EQ(count_char(out.str(), '\r'), 2);
  clock.now += 0.2;
  bar.update("sample step 2/20", 0.13);  // 0.2 s after the last draw: not drawn
  EXPECT_EQ(count_char(out.str(), '\r'), 2);
  clock.now += 0.06;
  bar.update("sample step 2/20", 0.14);  // 0.26 s after it: drawn
  EXPECT_EQ(count_char(out.str(), '\r'), 3);
  expect_contains(draws(out.str()).back(), "14%");
  clock.now += 0.01;
  bar.update("sample step 2/20", 1.0);  // the end is always drawn
  EXPECT_EQ(count_char(out.str(), '\r'), 4);
  expect_contains(draws(out.str()).back(), "100%");
  EXPECT_EQ(count_char(out.str(), '\n'), 0);
}

TEST(ProgressBar, FractionIsMonotoneAndClamped) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar bar(out, true, clock.fn());
  bar.update("a", 0.5);
  bar.update("b", 0.3);  // drawn (new label), still 50%
  expect_contains(draws(out.str()).back(), "b [##########..........] 50%");
  bar.update("c", 7.0);
  expect_contains(draws(out.str()).back(), "c [####################] 100%");
}

TEST(ProgressBar, EtaUnknownUntilOnePercentOrOneSecond) {
  // Before 1% and 1 s, no estimate.
  EXPECT_EQ(ProgressBar::render("x", 0.005, 0.5), "x [....................] 0% 0:00 elapsed, ETA --");
  EXPECT_EQ(ProgressBar::render("x", 0.0, 30.0), "x [....................] 0% 0:30 elapsed, ETA --");
  // Past 1%, an estimate at once: 0.5 s * 0.98 / 0.02 = 24.5 s.
  EXPECT_EQ(ProgressBar::render("x", 0.02, 0.5), "x [....................] 2% 0:00 elapsed, ETA 0:24");
  // Past 1 s, an estimate below 1%: 2 s * 0.995 / 0.005 = 398 s.
  EXPECT_EQ(ProgressBar::render("x", 0.005, 2.0), "x [....................] 0% 0:02 elapsed, ETA 6:38");
  // Half way after 10 min: 10 min to go.
  EXPECT_EQ(ProgressBar::render("decode", 0.5, 600.0), "decode [##########..........] 50% 10:00 elapsed, ETA 10:00");
  EXPECT_EQ(ProgressBar::render("decode", 1.0, 61.0), "decode [####################] 100% 1:01 elapsed, ETA 0:00");
}

TEST(ProgressBar, EtaOnTheFakeClock) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar bar(out, true, clock.fn());
  clock.now += 90.0;
  bar.update("decode", 0.25);  // 90 s * 0.75 / 0.25 = 270 s
  EXPECT_EQ(draws(out.str()).back(), "decode [#####...............] 25% 1:30 elapsed, ETA 4:30");
}

TEST(ProgressBar, DurationsInMinutesOrHours) {
  EXPECT_EQ(format_duration(0.0), "0:00");
  EXPECT_EQ(format_duration(59.9), "0:59");
  EXPECT_EQ(format_duration(61.0), "1:01");
  EXPECT_EQ(format_duration(3599.0), "59:59");
  EXPECT_EQ(format_duration(3600.0), "1:00:00");
  EXPECT_EQ(format_duration(3661.0), "1:01:01");
  EXPECT_EQ(format_duration(36000.0 + 59 * 60 + 7), "10:59:07");
  EXPECT_EQ(format_duration(-5.0), "0:00");
  // 2 h elapsed at 40%: 3 h to go.
  EXPECT_EQ(ProgressBar::render("s", 0.4, 7200.0), "s [########............] 40% 2:00:00 elapsed, ETA 3:00:00");
}

TEST(ProgressBar, FinishWritesOneNewlineAndIsIdempotent) {
  std::ostringstream out;
  FakeClock clock;
  {
    ProgressBar bar(out, true, clock.fn());
    bar.finish();  // nothing drawn: nothing to end
    EXPECT_EQ(out.str(), "");
    bar.update("encode", 0.3);
    bar.finish();
    EXPECT_EQ(count_char(out.str(), '\n'), 1);
    EXPECT_EQ(out.str().back(), '\n');
    bar.finish();
    EXPECT_EQ(count_char(out.str(), '\n'), 1);
  }  // the destructor adds none either
  EXPECT_EQ(count_char(out.str(), '\n'), 1);
}

TEST(ProgressBar, DestructorEndsAnOpenLine) {
  std::ostringstream out;
  FakeClock clock;
  {
    ProgressBar bar(out, true, clock.fn());
    bar.update("encode", 0.3);
    EXPECT_EQ(count_char(out.str(), '\n'), 0);
  }
  EXPECT_EQ(count_char(out.str(), '\n'), 1);
  EXPECT_EQ(out.str().back(), '\n');
}

TEST(ProgressBar, ALongLabelIsCutToSeventyNineColumns) {
  const std::string label(200, 'L');
  const std::string line = ProgressBar::render(label, 0.5, 7200.0);
  EXPECT_EQ(line.size(), ProgressBar::kMaxColumns);
  expect_contains(line, "...");
  expect_contains(line, "50% 2:00:00 elapsed, ETA 2:00:00");  // the numbers survive, the label gives way

  std::ostringstream out;
  FakeClock clock;
  ProgressBar bar(out, true, clock.fn());
  for (int i = 0; i <= 20; ++i) {
    clock.now += 3000.0;
    bar.update(label + std::to_string(i), i / 20.0);
  }
  bar.finish();
  const auto lines = draws(out.str());
  ASSERT_EQ(lines.size(), 21u);
  for (const auto& l : lines) EXPECT_LE(l.size(), 79u) << l;
}

TEST(ProgressBar, PadsOverALongerPreviousLine) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar bar(out, true, clock.fn());
  bar.update("sample step 10/20 with a long name", 0.5);
  const std::size_t first = draws(out.str()).back().size();
  bar.update("decode", 0.6);
  const std::string second = draws(out.str()).back();
  EXPECT_EQ(second.size(), first);  // the longer line's tail is blanked
  EXPECT_EQ(second.substr(second.find_last_not_of(' ') + 1), std::string(first - (second.find_last_not_of(' ') + 1), ' '));
  expect_contains(second, "decode [############........] 60%");
  EXPECT_GT(first, second.find_last_not_of(' ') + 1);
}

}  // namespace
}  // namespace ctsr::test
