#include <zmq/green/monitor.hpp>

#include "socket_core.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace zmq::green {

monitor_t::~monitor_t() { close(); }

monitor_t::monitor_t(monitor_t&& other) noexcept
    : watched_(std::exchange(other.watched_, nullptr)),
      generation_(other.generation_),
      monitor_socket_(std::move(other.monitor_socket_)),
      started_(std::exchange(other.started_, false))
{
}

monitor_t& monitor_t::operator=(monitor_t&& other)
{
    if (this != &other) {
        monitor_socket_.check_replaceable(); // before anything changes
        close();
        watched_ = std::exchange(other.watched_, nullptr);
        generation_ = other.generation_;
        monitor_socket_ = std::move(other.monitor_socket_);
        started_ = std::exchange(other.started_, false);
    }
    return *this;
}

void monitor_t::monitor(socket_t& socket, const char* addr, int events)
{
    init(socket, addr, events);
    while (check_event(-1)) {
    }
}

void monitor_t::init(socket_t& socket, const char* addr, int events)
{
    void* handle = socket.checked_handle(); // the owning thread's, or thread_error
    if (handle == nullptr)
        throw zmq::error_t(ENOTSOCK);
    if (addr == nullptr) // would stop a monitor, not start one
        throw zmq::error_t(EINVAL);
    close();
    // The stop is how check_event() and monitor() learn that the events end.
    if (zmq_socket_monitor(handle, addr, events | ZMQ_EVENT_MONITOR_STOPPED) != 0)
        throw zmq::error_t();
    detail::socket_core* core = socket.core();
    core->retain();
    watched_ = core;
    generation_ = ++core->monitors;
    started_ = true;
    try {
        socket_t pair(core->ctx, ZMQ_PAIR);
        pair.connect(addr);
        pair.core()->of_monitor = true;
        monitor_socket_ = std::move(pair);
    } catch (...) {
        close();
        throw;
    }
    on_monitor_started();
}

bool monitor_t::check_event(int timeout)
{
    if (monitor_socket_.handle() == nullptr) {
        if (started_)
            return false; // stopped
        throw std::logic_error("zmq::green::monitor_t::check_event: call init() first");
    }
    detail::check_wait_timeout(std::chrono::milliseconds{timeout}, "monitor_t::check_event");
    zmq::message_t event_frame;
    zmq::message_t addr_frame;
    try {
        if (monitor_socket_.poll(ZMQ_POLLIN, std::chrono::milliseconds{timeout}) == 0)
            return false;
        // libzmq sends an event's two frames at once: the second is there.
        (void)monitor_socket_.recv(event_frame);
        if (event_frame.more())
            (void)monitor_socket_.recv(addr_frame);
    } catch (const zmq::error_t& e) {
        // The events end. ENOTSOCK: the monitor's own socket was closed
        // under the wait (context_t::destroy, or init() in another fiber,
        // whose new socket this one must leave alone). ETERM: the context
        // shut down, and nothing but this object closes the socket, which
        // would hold up the context's close() while this object lives.
        if (e.num() == ENOTSOCK)
            return false;
        if (e.num() != ETERM)
            throw;
        monitor_socket_.close();
        return false;
    }
    // The frame is a 16-bit event and a 32-bit value, unaligned.
    zmq_event_t event{};
    if (event_frame.size() < sizeof(std::uint16_t) + sizeof(std::int32_t))
        throw zmq::error_t(EPROTO);
    const auto* data = static_cast<const char*>(event_frame.data());
    std::memcpy(&event.event, data, sizeof(std::uint16_t));
    std::memcpy(&event.value, data + sizeof(std::uint16_t), sizeof(std::int32_t));
    if (event.event == ZMQ_EVENT_MONITOR_STOPPED) {
        monitor_socket_.close();
        return false;
    }
    dispatch(event, addr_frame.to_string().c_str());
    return true;
}

void monitor_t::dispatch(const zmq_event_t& event, const char* addr)
{
    switch (event.event) {
    case ZMQ_EVENT_CONNECTED: on_event_connected(event, addr); break;
    case ZMQ_EVENT_CONNECT_DELAYED: on_event_connect_delayed(event, addr); break;
    case ZMQ_EVENT_CONNECT_RETRIED: on_event_connect_retried(event, addr); break;
    case ZMQ_EVENT_LISTENING: on_event_listening(event, addr); break;
    case ZMQ_EVENT_BIND_FAILED: on_event_bind_failed(event, addr); break;
    case ZMQ_EVENT_ACCEPTED: on_event_accepted(event, addr); break;
    case ZMQ_EVENT_ACCEPT_FAILED: on_event_accept_failed(event, addr); break;
    case ZMQ_EVENT_CLOSED: on_event_closed(event, addr); break;
    case ZMQ_EVENT_CLOSE_FAILED: on_event_close_failed(event, addr); break;
    case ZMQ_EVENT_DISCONNECTED: on_event_disconnected(event, addr); break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        on_event_handshake_failed_no_detail(event, addr);
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        on_event_handshake_failed_protocol(event, addr);
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: on_event_handshake_failed_auth(event, addr); break;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: on_event_handshake_succeeded(event, addr); break;
    default: on_event_unknown(event, addr); break;
    }
}

void monitor_t::abort()
{
    if (watched_ == nullptr)
        return;
    if (!watched_->touchable_here())
        throw thread_error("zmq::green::monitor_t::abort: the monitored socket belongs to "
                           "another thread");
    if (!watched_->closed && watched_->monitors == generation_)
        zmq_socket_monitor(watched_->handle, nullptr, 0);
    std::exchange(watched_, nullptr)->release();
}

void monitor_t::close() noexcept
{
    if (watched_ != nullptr && !watched_->touchable_here()) {
        // As a socket_t closed there: its thread's structures cannot be
        // touched from here, so the monitor runs on.
        std::fprintf(stderr, "zmq::green: monitor_t destroyed on a thread that does not own "
                             "its socket; leaving the monitor running\n");
        watched_ = nullptr;
    }
    abort();
    monitor_socket_.close();
    started_ = false;
}

} // namespace zmq::green
