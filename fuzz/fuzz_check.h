// FUZZ_CHECK: an invariant a harness asserts about what a parser accepted. A violation aborts,
// so libFuzzer records the input as a crash just as it does for ASan and UBSan findings.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
