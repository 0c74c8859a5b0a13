// Helpers shared by the test files.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "io/checkpoint.h"
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

// The embedded default model's path (resolve_default_model), or "" with the
// reason in *why when it is not installed (tests then skip).
inline std::string default_model_path(std::string* why) {
  try {
    return resolve_default_model();
  } catch (const Error& e) {
    *why = e.what();
    return "";
  }
}

}  // namespace kf
