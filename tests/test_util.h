// Helpers shared by the test files.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "util/error.h"

namespace kf {

// Expects f() to throw kf::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message '" << e.what() << "' lacks '" << p << "'";
  }
}

}  // namespace kf
