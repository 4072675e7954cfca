// zmq-green-device's command line, parsed apart from running it, so that the
// tool, its tests and its fuzzer share one parser.
#pragma once

#include <zmq/green/devices.hpp>

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace zmq::green::cli {

struct socket_spec {
    int type = -1; // -1: not given
    std::vector<std::string> binds;
    std::vector<std::string> connects;
};

struct device_config {
    std::string type; // queue, forwarder, streamer, proxy, steerable, monitored-queue
    socket_spec in, out, mon, ctrl;
    std::string in_prefix = "in";
    std::string out_prefix = "out";
    devices::run_mode run = devices::run_mode::thread;
    int hwm = -1; // -1: libzmq's default
    int linger = 0;
    std::int64_t max_message_size = -1; // ZMQ_MAXMSGSIZE; -1: no limit
    double stats_seconds = 0; // 0: no periodic counters
};

// A bad command line. what() is one line that names the problem.
class usage_error : public std::runtime_error {
public:
    explicit usage_error(const std::string& what);
};

// Parses argv (argv[0] is the program name). Returns nothing if --help was
// asked for, after writing the usage to help_out. Throws usage_error.
std::optional<device_config> parse_command_line(int argc, const char* const* argv,
                                                std::ostream& help_out);

// The device the configuration describes, configured but not started.
// Throws usage_error for socket types the device cannot use.
std::unique_ptr<devices::background_device> make_device(const device_config& config);

} // namespace zmq::green::cli
