// Raising the fd limit, for the examples that open thousands of sockets.
#pragma once

#include <sys/resource.h>

#include <algorithm>

namespace examples {

// Every ZeroMQ socket holds an fd (its signal), plus one per tcp connection.
// Raises the soft RLIMIT_NOFILE towards `wanted`, as far as the hard limit
// allows, and returns the soft limit in force afterwards.
inline rlim_t raise_fd_limit(rlim_t wanted)
{
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_cur < wanted) {
        lim.rlim_cur = std::min(wanted, lim.rlim_max);
        setrlimit(RLIMIT_NOFILE, &lim);
        getrlimit(RLIMIT_NOFILE, &lim);
    }
    return lim.rlim_cur;
}

} // namespace examples
