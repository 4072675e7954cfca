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

// The four roles (frontend, backend, copies, control) as each API names them:
// device.hpp's functions, monitored_queue, devices.hpp's classes.
extern const char* const proxy_role_names[4];
extern const char* const queue_role_names[4];
extern const char* const background_role_names[4];

struct device_loop_options {
    const char* name = "proxy";     // names the device in errors
    const char* const* role_names = proxy_role_names;
    bool front_to_back = true;
    bool back_to_front = true;
    socket_ref capture;             // every received frame is copied here first
    socket_ref control;             // steerable proxy commands
    socket_ref monitor;             // monitored_queue: [prefix] + forwarded frames
    std::string front_prefix;       // monitor prefix for frontend -> backend
    std::string back_prefix;        // monitor prefix for backend -> frontend
    bool swap_ids = false;          // ROUTER-ROUTER monitored_queue
    device_counters* counters = nullptr; // optional: also visible outside the loop

    // The socket that gets copies: a device has a capture or a monitor.
    socket_ref copies() const { return monitor ? monitor : capture; }
};

// The socket types a device is built from; -1 for an absent socket. Checked
// by the functions of device.hpp on the sockets they get, and by the
// background devices on the types they are given, before anything runs.
struct device_sockets {
    const char* device;         // names the device in messages
    const char* const* names;   // one of the role name sets above
    bool front_to_back = true;
    bool back_to_front = true;
    int front = -1;
    int back = -1;              // -1: the frontend serves both sides
    int capture = -1;           // capture or monitor: receives copies
    int control = -1;
};

// Why sockets of these types cannot make the device; empty if they can.
std::string device_sockets_problem(const device_sockets& d);

// std::invalid_argument for an empty monitored_queue prefix.
void check_prefixes(const char* device, const std::string& in_prefix,
                    const std::string& out_prefix);

// device()'s options; an unknown type is error_t(EINVAL).
device_loop_options device_options(int type);

// monitored_queue's options; validates the arguments.
device_loop_options monitored_queue_options(socket_ref in, socket_ref out, socket_ref mon,
                                            const std::string& in_prefix,
                                            const std::string& out_prefix);

// Checks the sockets (std::invalid_argument for types that cannot serve,
// error_t(ENOTSOCK) for a missing one), then forwards until TERMINATE, ETERM
// or ENOTSOCK (then returns); throws other errors.
void run_device_loop(socket_ref frontend, socket_ref backend, const device_loop_options& opts);

} // namespace zmq::green::detail
