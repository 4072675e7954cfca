// The one forwarding loop behind every device, and the counters it keeps.
#pragma once

#include <zmq/green/device.hpp>

#include <atomic>
#include <cstdint>
#include <string>

namespace zmq::green::detail {

// Plain atomics so that the block can live in memory shared with a forked
// device process, and be read by the owner while the loop runs.
struct device_counters {
    std::atomic<std::uint64_t> value[8] = {};

    proxy_statistics snapshot() const noexcept;
};

struct device_loop_options {
    bool front_to_back = true;
    bool back_to_front = true;
    socket_ref capture;             // every received frame is copied here first
    socket_ref control;             // steerable proxy commands
    socket_ref monitor;             // monitored_queue: [prefix] + forwarded frames
    std::string front_prefix;       // monitor prefix for frontend -> backend
    std::string back_prefix;        // monitor prefix for backend -> frontend
    bool swap_ids = false;          // ROUTER-ROUTER monitored_queue
    device_counters* counters = nullptr; // optional: also visible outside the loop
};

// monitored_queue's options; validates the arguments.
device_loop_options monitored_queue_options(socket_ref in, socket_ref out, socket_ref mon,
                                            const std::string& in_prefix,
                                            const std::string& out_prefix);

// Forwards until TERMINATE, ETERM or ENOTSOCK (then returns); throws other errors.
void run_device_loop(socket_ref frontend, socket_ref backend, const device_loop_options& opts);

} // namespace zmq::green::detail
