#include <zmq/green/device.hpp>
#include <zmq/green/multipart.hpp>
#include <zmq/green/poll.hpp>

#include "device_loop.hpp"

#include <cstring>
#include <iterator>
#include <vector>

namespace zmq::green {

namespace detail {

proxy_statistics device_counters::snapshot() const noexcept
{
    std::uint64_t v[8];
    for (int i = 0; i < 8; ++i)
        v[i] = value[i].load(std::memory_order_relaxed);
    return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
}

namespace {

// Indices into device_counters: the frontend block starts at 0, the backend's at 4.
constexpr int msgs_in = 0, bytes_in = 1, msgs_out = 2, bytes_out = 3;
constexpr int frontend_base = 0, backend_base = 4;

// libzmq 4.3.5 forwards at most this many messages per direction per wake-up,
// so one busy direction cannot starve the other or the control socket.
constexpr int burst_size = 1000;

struct direction {
    direction(socket_ref s, socket_ref d, int sb, int db, const std::string* p)
        : src(s), dst(d), src_base(sb), dst_base(db), prefix(p)
    {
    }
    socket_ref src;
    socket_ref dst;
    int src_base;
    int dst_base;
    const std::string* prefix;
    // A message received from src that dst could not take yet, from frame
    // `next` on. The device holds at most this one message per direction,
    // as libzmq's proxy does while it blocks in a send.
    std::vector<message_t> held;
    std::size_t next = 0;
    bool waiting_out() const noexcept { return !held.empty(); }
};

void bump(device_counters& c, int index, std::uint64_t by)
{
    c.value[index].fetch_add(by, std::memory_order_relaxed);
}

void unbump(device_counters& c, int index, std::uint64_t by)
{
    c.value[index].fetch_sub(by, std::memory_order_relaxed);
}

send_flags more_if(bool more) { return more ? send_flags::sndmore : send_flags::none; }

// Sends what d holds without waiting. False if dst cannot take it now.
bool send_held(direction& d, device_counters& c)
{
    for (; d.next < d.held.size(); ++d.next) {
        message_t& frame = d.held[d.next];
        const auto size = frame.size();
        // Counted first: whoever receives the frame must find it counted.
        bump(c, d.dst_base + msgs_out, 1);
        bump(c, d.dst_base + bytes_out, size);
        bool sent;
        try {
            sent = static_cast<bool>(
                d.dst.send(frame, more_if(d.next + 1 < d.held.size()) | send_flags::dontwait));
        } catch (const zmq::error_t& e) {
            // A REQ or REP whose turn it is not: as EAGAIN, it becomes
            // writable when its state machine moves on.
            if (e.num() != EFSM)
                throw;
            sent = false;
        }
        if (!sent) {
            unbump(c, d.dst_base + msgs_out, 1);
            unbump(c, d.dst_base + bytes_out, size);
            return false;
        }
    }
    d.held.clear();
    d.next = 0;
    return true;
}

// Relays one message if the source has one. Returns whether it received
// one; if dst could not take all of it, d holds the rest.
bool relay_one(direction& d, const device_loop_options& opts, device_counters& c)
{
    // socket_ref's operations are non-const.
    socket_ref capture = opts.capture;
    socket_ref monitor = opts.monitor;
    std::vector<message_t>& frames = d.held;
    if (!recv_multipart(d.src, std::back_inserter(frames), recv_flags::dontwait))
        return false;
    for (const auto& f : frames) {
        bump(c, d.src_base + msgs_in, 1);
        bump(c, d.src_base + bytes_in, f.size());
    }
    if (opts.swap_ids && frames.size() >= 2)
        std::swap(frames[0], frames[1]);
    // The copies go out before the original, as libzmq's capture and
    // pyzmq's monitor do.
    if (monitor)
        monitor.send(zmq::buffer(*d.prefix), send_flags::sndmore);
    for (size_t i = 0; i < frames.size(); ++i) {
        const bool more = i + 1 < frames.size();
        for (socket_ref copy_to : {capture, monitor}) {
            if (!copy_to)
                continue;
            message_t copy;
            copy.copy(frames[i]);
            copy_to.send(copy, more_if(more));
        }
    }
    send_held(d, c);
    return true;
}

enum class control_result { none, pause, resume, terminate };

control_result handle_control(socket_ref control, const device_counters& c)
{
    std::vector<message_t> cmd;
    if (!recv_multipart(control, std::back_inserter(cmd), recv_flags::dontwait))
        return control_result::none;
    const std::string word = cmd.size() == 1 ? cmd[0].to_string() : std::string();
    if (word == "STATISTICS") {
        const auto stats = c.snapshot().to_array();
        for (size_t i = 0; i < stats.size(); ++i) {
            message_t frame(sizeof(std::uint64_t));
            std::memcpy(frame.data(), &stats[i], sizeof(std::uint64_t));
            control.send(frame, more_if(i + 1 < stats.size()));
        }
        return control_result::none;
    }
    // A REP socket must answer before it can receive the next command.
    if (control.get(zmq::sockopt::type) == ZMQ_REP)
        control.send(message_t(), send_flags::none);
    if (word == "PAUSE")
        return control_result::pause;
    if (word == "RESUME")
        return control_result::resume;
    if (word == "TERMINATE")
        return control_result::terminate;
    return control_result::none;
}

void add_item(std::vector<zmq_pollitem_t>& items, socket_ref s, short events)
{
    for (auto& item : items)
        if (item.socket == s.handle()) {
            item.events = static_cast<short>(item.events | events);
            return;
        }
    items.push_back({s.handle(), 0, events, 0});
}

short revents_of(const std::vector<zmq_pollitem_t>& items, socket_ref s)
{
    for (const auto& item : items)
        if (item.socket == s.handle())
            return item.revents;
    return 0;
}

void forward(socket_ref frontend, socket_ref backend, const device_loop_options& opts)
{
    device_counters local;
    device_counters& c = opts.counters ? *opts.counters : local;

    // A PUSH or PUB never receives and a PULL or SUB never sends: a
    // direction from or to one has nothing to relay.
    auto can_relay = [](socket_ref src, socket_ref dst) {
        const int from = src.get(zmq::sockopt::type), to = dst.get(zmq::sockopt::type);
        return from != ZMQ_PUSH && from != ZMQ_PUB && to != ZMQ_PULL && to != ZMQ_SUB;
    };
    std::vector<direction> dirs;
    if (frontend == backend) {
        // One socket both receives and answers (an echoing REP).
        dirs.emplace_back(frontend, frontend, frontend_base, frontend_base, &opts.front_prefix);
    } else {
        if (opts.front_to_back && can_relay(frontend, backend))
            dirs.emplace_back(frontend, backend, frontend_base, backend_base, &opts.front_prefix);
        if (opts.back_to_front && can_relay(backend, frontend))
            dirs.emplace_back(backend, frontend, backend_base, frontend_base, &opts.back_prefix);
    }

    bool paused = false;
    std::vector<zmq_pollitem_t> items;
    for (;;) {
        items.clear();
        if (!paused)
            for (const auto& d : dirs) {
                if (d.waiting_out())
                    add_item(items, d.dst, ZMQ_POLLOUT);
                else
                    add_item(items, d.src, ZMQ_POLLIN);
            }
        if (opts.control)
            add_item(items, opts.control, ZMQ_POLLIN);
        poll(items);

        if (opts.control && (revents_of(items, opts.control) & ZMQ_POLLIN)) {
            switch (handle_control(opts.control, c)) {
            case control_result::pause:
                paused = true;
                break;
            case control_result::resume:
                paused = false;
                break;
            case control_result::terminate:
                return;
            case control_result::none:
                break;
            }
        }
        if (paused)
            continue;
        for (auto& d : dirs) {
            if (d.waiting_out() && !send_held(d, c))
                continue;
            // The non-blocking receive is the check for a message, the
            // non-blocking send the check for room: no ZMQ_EVENTS read per
            // message.
            for (int n = 0; n < burst_size && !d.waiting_out(); ++n)
                if (!relay_one(d, opts, c))
                    break;
        }
    }
}

void require_socket(socket_ref s)
{
    if (!s)
        throw zmq::error_t(ENOTSOCK);
}

} // namespace

void run_device_loop(socket_ref frontend, socket_ref backend, const device_loop_options& opts)
{
    require_socket(frontend);
    require_socket(backend);
    try {
        forward(frontend, backend, opts);
    } catch (const zmq::error_t& e) {
        // The owner shut the context down or closed a socket: the way to stop a device.
        if (e.num() == ETERM || e.num() == ENOTSOCK)
            return;
        throw;
    }
}

device_loop_options monitored_queue_options(socket_ref in, socket_ref out, socket_ref mon,
                                            const std::string& in_prefix,
                                            const std::string& out_prefix)
{
    if (in_prefix.empty() || out_prefix.empty())
        throw std::invalid_argument("zmq::green::monitored_queue: prefixes must not be empty");
    require_socket(in);
    require_socket(out);
    require_socket(mon);
    device_loop_options opts;
    opts.monitor = mon;
    opts.front_prefix = in_prefix;
    opts.back_prefix = out_prefix;
    opts.swap_ids = in.get(zmq::sockopt::type) == ZMQ_ROUTER
                    && out.get(zmq::sockopt::type) == ZMQ_ROUTER;
    return opts;
}

} // namespace detail

void device(device_type type, socket_ref frontend, socket_ref backend)
{
    detail::device_loop_options opts;
    opts.back_to_front = type == device_type::queue;
    detail::run_device_loop(frontend, backend, opts);
}

void device(int type, socket_ref frontend, socket_ref backend)
{
    if (type != ZMQ_QUEUE && type != ZMQ_FORWARDER && type != ZMQ_STREAMER)
        throw zmq::error_t(EINVAL);
    device(static_cast<device_type>(type), frontend, backend);
}

void proxy(socket_ref frontend, socket_ref backend, socket_ref capture)
{
    detail::device_loop_options opts;
    opts.capture = capture;
    detail::run_device_loop(frontend, backend, opts);
}

void proxy_steerable(socket_ref frontend, socket_ref backend, socket_ref capture,
                     socket_ref control)
{
    detail::device_loop_options opts;
    opts.capture = capture;
    opts.control = control;
    detail::run_device_loop(frontend, backend, opts);
}

void monitored_queue(socket_ref in, socket_ref out, socket_ref mon, const std::string& in_prefix,
                     const std::string& out_prefix)
{
    detail::run_device_loop(in, out,
                            detail::monitored_queue_options(in, out, mon, in_prefix, out_prefix));
}

} // namespace zmq::green
