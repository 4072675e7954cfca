// Command-line options of the examples: `--name N` pairs of positive counts.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>

namespace examples {

// Sets each named count from `--name N` on the command line; the counts hold
// their defaults. Anything else prints a usage line and exits with status 2.
inline void parse_counts(int argc, char** argv,
                         std::initializer_list<std::pair<const char*, int*>> counts)
{
    auto usage = [&] {
        std::string line = "usage: " + std::string(argv[0]);
        for (const auto& [flag, value] : counts)
            line += " [" + std::string(flag) + " N]";
        std::fprintf(stderr, "%s   (N from 1 to 1000000)\n", line.c_str());
        std::exit(2);
    };
    for (int i = 1; i < argc; ++i) {
        int* target = nullptr;
        for (const auto& [flag, value] : counts)
            if (std::strcmp(argv[i], flag) == 0)
                target = value;
        if (target == nullptr || i + 1 == argc)
            usage();
        char* end = nullptr;
        const long n = std::strtol(argv[++i], &end, 10);
        if (*end != '\0' || n <= 0 || n > 1000000)
            usage();
        *target = static_cast<int>(n);
    }
}

} // namespace examples
