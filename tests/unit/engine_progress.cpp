// The stderr progress bar's text: bar fill, counts, rate and ETA.
#include <gtest/gtest.h>

#include "util/progress.h"

using kf::Progress;

TEST(Progress, RendersBarRateAndEta) {
  std::string s = Progress::render("gen", 50, 200, "tok", 10.0, 10);
  EXPECT_EQ(s, "gen [==        ] 50/200 tok 5.0 tok/s ETA 0:30");
  EXPECT_EQ(Progress::render("gen", 200, 200, "tok", 4.0, 4), "gen [====] 200/200 tok 50.0 tok/s");
  EXPECT_EQ(Progress::render("x", 7, 0, "it", 0.0, 4), "x 7 it 0.0 it/s");  // unknown total
  EXPECT_EQ(Progress::render("x", 1, 7300, "tok", 1.0, 2), "x [  ] 1/7300 tok 1.0 tok/s ETA 121:39");
}

TEST(Progress, SilentWhenNotForcedAndNotATerminal) {
  Progress p("gen", 10, "tok", false);
  p.update(5);  // under ctest stderr is not a TTY: nothing is drawn
  p.finish();
  Progress forced("gen", 10, "tok", true);
  EXPECT_TRUE(forced.enabled());
}
