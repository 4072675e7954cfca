#include <zmq/green/device.hpp>
#include <zmq/green/multipart.hpp>
#include <zmq/green/poll.hpp>
#include <zmq/green/timeout.hpp>

#include "device_loop.hpp"
#include "poll_wait.hpp"
#include "socket_core.hpp"

#include <cstring>
#include <deque>
#include <iterator>
#include <stdexcept>
#include <vector>

namespace zmq::green {

namespace detail {

const char* const proxy_role_names[4] = {"frontend", "backend", "capture", "control"};
const char* const queue_role_names[4] = {"in", "out", "mon", "control"};
const char* const background_role_names[4] = {"in", "out", "mon", "ctrl"};

namespace {

const char* socket_type_name(int type) noexcept
{
    static const char* const names[] = {"PAIR",   "PUB",    "SUB",  "REQ",  "REP",  "DEALER",
                                        "ROUTER", "PULL",   "PUSH", "XPUB", "XSUB", "STREAM"};
    return type >= 0 && type <= ZMQ_STREAM ? names[type] : nullptr;
}

} // namespace

std::string device_sockets_problem(const device_sockets& d)
{
    const std::string prefix = std::string("zmq::green::") + d.device + ": ";
    const int types[4] = {d.front, d.back, d.capture, d.control};
    for (int i = 0; i < 4; ++i)
        if (types[i] >= 0 && socket_type_name(types[i]) == nullptr)
            return prefix + "the " + d.names[i] + " socket has unsupported type "
                   + std::to_string(types[i]);
    auto role = [&](int i) {
        return std::string("the ") + d.names[i] + " socket (" + socket_type_name(types[i]) + ")";
    };
    if (d.back < 0) {
        if (!can_receive(d.front) || !can_send(d.front))
            return prefix + role(0) + " serves both sides but cannot "
                   + (can_receive(d.front) ? "send" : "receive");
    } else {
        // A QUEUE whose sockets work one way only (SUB in, PUB out) is a
        // classic forwarder: refuse only a device that can move nothing.
        std::string reasons;
        bool any = false;
        auto direction = [&](int src, int dst) {
            std::string why;
            if (!can_receive(types[src]))
                why = role(src) + " cannot receive";
            else if (!can_send(types[dst]))
                why = role(dst) + " cannot send";
            any = any || why.empty();
            if (!why.empty())
                reasons += (reasons.empty() ? "" : "; ") + why;
        };
        if (d.front_to_back)
            direction(0, 1);
        if (d.back_to_front)
            direction(1, 0);
        if (!any)
            return prefix + "nothing can be forwarded: " + reasons;
    }
    if (d.capture >= 0) {
        if (!can_send(d.capture))
            return prefix + role(2) + " cannot send";
        if (d.capture == ZMQ_REQ || d.capture == ZMQ_REP)
            return prefix + role(2) + " alternates sends and receives; copies only go out";
        if (d.capture == ZMQ_STREAM)
            return prefix + role(2) + " takes each first frame as a peer id";
    }
    if (d.control >= 0) {
        if (!can_receive(d.control))
            return prefix + role(3) + " cannot receive commands";
        if (d.control == ZMQ_REQ)
            return prefix + role(3) + " must send before it can receive a command";
        if (d.control == ZMQ_ROUTER || d.control == ZMQ_STREAM)
            return prefix + role(3) + " puts a peer id before every command, and commands are "
                                      "single frames";
    }
    return {};
}

void check_prefixes(const char* device, const std::string& in_prefix,
                    const std::string& out_prefix)
{
    for (const auto* p : {&in_prefix, &out_prefix})
        if (p->empty())
            throw std::invalid_argument(std::string("zmq::green::") + device + ": "
                                        + (p == &in_prefix ? "in_prefix" : "out_prefix")
                                        + " must not be empty: a subscriber could not tell "
                                          "the directions apart");
}

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
    // dst reported ZMQ_POLLOUT and refused the held message all the same: a
    // ROUTER_MANDATORY has room for another peer (a STREAM always says
    // POLLOUT). Only a command from the peer can change that: the loop then
    // waits for dst to change, not for its level.
    bool level_lies = false;
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
        bool unroutable = false;
        try {
            sent = static_cast<bool>(
                d.dst.send(frame, more_if(d.next + 1 < d.held.size()) | send_flags::dontwait));
        } catch (const zmq::error_t& e) {
            // A REQ or REP whose turn it is not: as EAGAIN, it becomes
            // writable when its state machine moves on. A ROUTER with
            // ZMQ_ROUTER_MANDATORY (or a STREAM) refuses the first frame of
            // a message for a peer it does not know: one peer's bad address
            // must not end the device for all, so the message is dropped,
            // as a ROUTER without the option does. Nothing of it was sent,
            // and capture and monitor already have their copies.
            unroutable = e.num() == EHOSTUNREACH && d.next == 0;
            if (e.num() != EFSM && !unroutable)
                throw;
            sent = false;
        }
        if (!sent) {
            unbump(c, d.dst_base + msgs_out, 1);
            unbump(c, d.dst_base + bytes_out, size);
            if (!unroutable)
                return false;
            break;
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
    try {
        if (!recv_multipart(d.src, std::back_inserter(frames), recv_flags::dontwait))
            return false;
    } catch (const zmq::error_t& e) {
        // A REP source that must answer first, or a REQ that must ask: its
        // turn comes with a message the other direction relays.
        if (e.num() == EFSM)
            return false;
        throw;
    }
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

// Never waits for the controller: a reply its peer does not read (the
// control socket at its high-water mark) is dropped, so a controller that
// floods STATISTICS cannot stall the forwarding. Only the first frame can
// meet the high-water mark; the rest of a started message always goes.
void send_statistics(socket_ref control, const device_counters& c)
{
    const auto stats = c.snapshot().to_array();
    for (size_t i = 0; i < stats.size(); ++i) {
        message_t frame(sizeof(std::uint64_t));
        std::memcpy(frame.data(), &stats[i], sizeof(std::uint64_t));
        const auto flags = more_if(i + 1 < stats.size());
        if (i == 0) {
            if (!control.send(frame, flags | send_flags::dontwait))
                return;
        } else {
            control.send(frame, flags);
        }
    }
}

control_result handle_control(socket_ref control, const device_counters& c)
{
    std::vector<message_t> cmd;
    if (!recv_multipart(control, std::back_inserter(cmd), recv_flags::dontwait))
        return control_result::none;
    const std::string word = cmd.size() == 1 ? cmd[0].to_string() : std::string();
    const int type = control.get(zmq::sockopt::type);
    if (word == "STATISTICS") {
        if (can_send(type)) // a SUB control socket cannot answer
            send_statistics(control, c);
        return control_result::none;
    }
    // A REP socket must answer before it can receive the next command.
    if (type == ZMQ_REP)
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

    // A direction from a socket that cannot receive, or to one that cannot
    // send (a SUB in, PUB out queue), has nothing to relay.
    auto can_relay = [](socket_ref src, socket_ref dst) {
        return can_receive(src.get(zmq::sockopt::type)) && can_send(dst.get(zmq::sockopt::type));
    };
    std::vector<direction> dirs;
    if (frontend == backend) {
        // One socket both receives and answers (an echoing REP). What it
        // sends back counts as the backend's, as libzmq counts it.
        dirs.emplace_back(frontend, frontend, frontend_base, backend_base, &opts.front_prefix);
    } else {
        if (opts.front_to_back && can_relay(frontend, backend))
            dirs.emplace_back(frontend, backend, frontend_base, backend_base, &opts.front_prefix);
        if (opts.back_to_front && can_relay(backend, frontend))
            dirs.emplace_back(backend, frontend, backend_base, frontend_base, &opts.back_prefix);
    }

    // The loop yields, and its copies' sends may park: another fiber may
    // close, or destroy, one of its sockets meanwhile. Their state lives on
    // until the loop ends, and a closed one ends it (ENOTSOCK), as it does a
    // poll.
    std::deque<core_guard> kept; // a deque: a core_guard does not move
    for (socket_ref s : {frontend, backend, opts.capture, opts.control, opts.monitor})
        if (s.core() != nullptr)
            kept.emplace_back(*s.core());
    auto check_open = [&kept] {
        for (const core_guard& held : kept)
            if (held.core().closed)
                throw zmq::error_t(ENOTSOCK);
    };

    bool paused = false;
    int since_yield = 0; // messages relayed since the thread's other fibers had a turn
    std::vector<zmq_pollitem_t> items;
    std::vector<void*> changes;
    auto send_lying = [&] {
        bool sent = false;
        for (auto& d : dirs)
            if (d.level_lies && send_held(d, c))
                sent = true;
        return sent;
    };
    for (;;) {
        check_open();
        items.clear();
        changes.clear();
        if (!paused)
            for (auto& d : dirs) {
                if (!d.waiting_out()) {
                    d.level_lies = false;
                    add_item(items, d.src, ZMQ_POLLIN);
                } else if (d.level_lies) {
                    changes.push_back(d.dst.handle());
                } else {
                    add_item(items, d.dst, ZMQ_POLLOUT);
                }
            }
        if (opts.control)
            add_item(items, opts.control, ZMQ_POLLIN);
        // Closing any of its sockets ends the device (ENOTSOCK), also one it
        // is not waiting on now: an idle direction's destination, the
        // capture, every socket while paused. ZMQ_POLLERR parks on a socket
        // for its errors and close only: zmq_poll never reports it.
        for (const auto& d : dirs) {
            add_item(items, d.src, ZMQ_POLLERR);
            // A destination waited on for a change is told of its close by
            // that wait; as an item, its level reads would take the commands
            // that announce room.
            if (paused || !d.level_lies)
                add_item(items, d.dst, ZMQ_POLLERR);
        }
        if (opts.copies())
            add_item(items, opts.copies(), ZMQ_POLLERR);
        if (changes.empty())
            poll(items);
        else
            poll_or_retry(items.data(), items.size(), changes, send_lying);

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
            if (d.waiting_out() && !send_held(d, c)) {
                if (revents_of(items, d.dst) & ZMQ_POLLOUT)
                    d.level_lies = true;
                continue;
            }
            // The non-blocking receive is the check for a message, the
            // non-blocking send the check for room: no ZMQ_EVENTS read per
            // message.
            for (int n = 0; n < burst_size && !d.waiting_out(); ++n) {
                if (!relay_one(d, opts, c))
                    break;
                ++since_yield;
            }
        }
        // poll() returns without yielding while a source has messages: a busy
        // device would keep the thread's other fibers (its stop watcher
        // among them) from ever running, and a kill or a scoped timeout of
        // its own fiber from reaching it. A green sleep of nothing yields
        // and meets both.
        if (since_yield >= burst_size) {
            since_yield = 0;
            sleep_for(std::chrono::milliseconds{0});
        }
    }
}

void require_socket(socket_ref s)
{
    if (!s)
        throw zmq::error_t(ENOTSOCK);
}

int type_of(socket_ref s) { return s ? s.get(zmq::sockopt::type) : -1; }

// The checks a device's sockets must pass before it runs: present, distinct
// where it matters, and of types that can do their part.
void check_sockets(socket_ref frontend, socket_ref backend, const device_loop_options& opts)
{
    require_socket(frontend);
    require_socket(backend);
    const socket_ref copies = opts.copies();
    const char* const* names = opts.role_names;
    const std::string prefix = std::string("zmq::green::") + opts.name + ": the ";
    auto refuse_overlap = [&](socket_ref s, int role) {
        if (!s)
            return;
        if (s == frontend || s == backend)
            throw std::invalid_argument(prefix + names[role] + " socket is also the "
                                        + names[s == frontend ? 0 : 1] + " socket");
    };
    refuse_overlap(copies, 2);
    refuse_overlap(opts.control, 3);
    if (opts.control && opts.control == copies)
        throw std::invalid_argument(prefix + names[3] + " socket is also the " + names[2]
                                    + " socket");
    device_sockets d;
    d.device = opts.name;
    d.names = names;
    d.front_to_back = opts.front_to_back;
    d.back_to_front = opts.back_to_front;
    d.front = type_of(frontend);
    d.back = frontend == backend ? -1 : type_of(backend);
    d.capture = type_of(copies);
    d.control = type_of(opts.control);
    const auto problem = device_sockets_problem(d);
    if (!problem.empty())
        throw std::invalid_argument(problem);
}

const char* device_name(device_type type) noexcept
{
    switch (type) {
    case device_type::queue:
        return "device(queue)";
    case device_type::forwarder:
        return "device(forwarder)";
    case device_type::streamer:
        return "device(streamer)";
    }
    return nullptr;
}

} // namespace

void run_device_loop(socket_ref frontend, socket_ref backend, const device_loop_options& opts)
{
    check_sockets(frontend, backend, opts);
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
    check_prefixes("monitored_queue", in_prefix, out_prefix);
    require_socket(in);
    require_socket(out);
    require_socket(mon);
    device_loop_options opts;
    opts.name = "monitored_queue";
    opts.role_names = queue_role_names;
    opts.monitor = mon;
    opts.front_prefix = in_prefix;
    opts.back_prefix = out_prefix;
    // One ROUTER as both sides answers the sender: its identity stays first.
    opts.swap_ids = in != out && in.get(zmq::sockopt::type) == ZMQ_ROUTER
                    && out.get(zmq::sockopt::type) == ZMQ_ROUTER;
    return opts;
}

device_loop_options device_options(int type)
{
    const char* name = device_name(static_cast<device_type>(type));
    if (name == nullptr)
        throw zmq::error_t(EINVAL);
    device_loop_options opts;
    opts.name = name;
    opts.back_to_front = type == ZMQ_QUEUE;
    return opts;
}

} // namespace detail

void device(device_type type, socket_ref frontend, socket_ref backend)
{
    detail::run_device_loop(frontend, backend, detail::device_options(static_cast<int>(type)));
}

void device(int type, socket_ref frontend, socket_ref backend)
{
    detail::run_device_loop(frontend, backend, detail::device_options(type));
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
    opts.name = "proxy_steerable";
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
