// Socket event monitoring: cppzmq's monitor_t, where waiting for an event
// parks the calling fiber instead of blocking the thread in zmq::poll.
#pragma once

#include <zmq/green/socket.hpp>

#include <zmq.h>

#include <string>

namespace zmq::green {

// As cppzmq's monitor_t: init() starts libzmq's monitor of a green socket on
// an inproc endpoint and connects a green PAIR socket to it; check_event()
// receives one event and calls its handler. Unlike cppzmq's:
// - monitor() returns once the monitor stops (abort(), or the socket closed
//   and libzmq let it go: after its ZMQ_LINGER if messages wait) or the
//   context shuts down or is destroyed, where cppzmq's loops for ever;
// - ZMQ_EVENT_MONITOR_STOPPED is always monitored, as the end of the events;
// - check_event() before init() throws std::logic_error, and returns false
//   at once after the monitor stopped;
// - libzmq keeps one monitor per socket: a monitor that a newer one replaced
//   (its events ended there) leaves the newer one running when it goes or
//   aborts, where cppzmq's stops it;
// - the context's close() on the monitor's thread closes the monitor's own
//   socket, read or not (the monitor is then stopped); a close() on another
//   thread waits for it, as for that thread's other sockets, until the
//   monitor is read past the shutdown or destroyed.
class monitor_t {
public:
    monitor_t() noexcept = default;
    virtual ~monitor_t();

    monitor_t(monitor_t&& other) noexcept;
    // Throws thread_error on a thread that does not own the monitored
    // socket; this monitor is then left as it was.
    monitor_t& operator=(monitor_t&& other);
    monitor_t(const monitor_t&) = delete;
    monitor_t& operator=(const monitor_t&) = delete;

    // init(), then check_event() until the monitor stops.
    void monitor(socket_t& socket, const std::string& addr, int events = ZMQ_EVENT_ALL)
    {
        monitor(socket, addr.c_str(), events);
    }
    void monitor(socket_t& socket, const char* addr, int events = ZMQ_EVENT_ALL);

    // Stops the monitor this object had, if any, and monitors socket.
    // Throws zmq::error_t (EPROTONOSUPPORT for an endpoint not inproc,
    // ENOTSOCK for a closed socket, ETERM; EADDRINUSE for the endpoint of a
    // monitor just stopped, which libzmq releases later: use a new one).
    void init(socket_t& socket, const std::string& addr, int events = ZMQ_EVENT_ALL)
    {
        init(socket, addr.c_str(), events);
    }
    void init(socket_t& socket, const char* addr, int events = ZMQ_EVENT_ALL);

    // Waits up to timeout ms (-1: no limit; below is std::invalid_argument,
    // where cppzmq waits for ever) for an event and calls its handler. False on timeout, when the monitor stopped, and once the
    // context shut down or was destroyed (as stopped from then on).
    bool check_event(int timeout = 0);

    // Stops the monitor: the next check_event() reads the stop and returns
    // false. Throws thread_error on a thread that does not own the socket.
    void abort();

    virtual void on_monitor_started() {}
    virtual void on_event_connected(const zmq_event_t&, const char*) {}
    virtual void on_event_connect_delayed(const zmq_event_t&, const char*) {}
    virtual void on_event_connect_retried(const zmq_event_t&, const char*) {}
    virtual void on_event_listening(const zmq_event_t&, const char*) {}
    virtual void on_event_bind_failed(const zmq_event_t&, const char*) {}
    virtual void on_event_accepted(const zmq_event_t&, const char*) {}
    virtual void on_event_accept_failed(const zmq_event_t&, const char*) {}
    virtual void on_event_closed(const zmq_event_t&, const char*) {}
    virtual void on_event_close_failed(const zmq_event_t&, const char*) {}
    virtual void on_event_disconnected(const zmq_event_t&, const char*) {}
    virtual void on_event_handshake_failed_no_detail(const zmq_event_t&, const char*) {}
    virtual void on_event_handshake_failed_protocol(const zmq_event_t&, const char*) {}
    virtual void on_event_handshake_failed_auth(const zmq_event_t&, const char*) {}
    virtual void on_event_handshake_succeeded(const zmq_event_t&, const char*) {}
    virtual void on_event_unknown(const zmq_event_t&, const char*) {}

private:
    void close() noexcept;
    void dispatch(const zmq_event_t& event, const char* addr);

    // The monitored socket's state, kept alive (not open) by a reference:
    // the socket may close first.
    detail::socket_core* watched_ = nullptr;
    unsigned generation_ = 0; // which of watched_'s monitors this one started
    socket_t monitor_socket_;
    bool started_ = false;
};

} // namespace zmq::green
