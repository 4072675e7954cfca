// Green sockets: cppzmq's socket API, where a call that would block parks the
// calling fiber instead of the thread.
#pragma once

#include <zmq/green/context.hpp>

#include <zmq.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

namespace boost::fibers {
class context;
}

namespace zmq::green {

class socket_t;
class socket_ref;
class monitor_t;

namespace detail {

class socket_core;
class message_frames;

// The operations shared by socket_t and socket_ref, as in cppzmq.
//
// send/recv first try the operation without blocking. When libzmq answers
// EAGAIN and the caller did not ask for dontwait, the fiber parks until the
// socket is ready, ZMQ_SNDTIMEO/ZMQ_RCVTIMEO passes (empty result, as in
// cppzmq), the socket is closed (error_t ENOTSOCK) or its context shut down
// (error_t ETERM). Fibers waiting in one direction are served in arrival
// order, and a multipart message, sent or received, is never interleaved
// with another fiber's frames: the first frame's fiber owns that direction
// until the last frame.
class socket_base {
public:
    template<class Opt, class... Args>
    void set(Opt opt, Args&&... args)
    {
        zmq::socket_ref(zmq::from_handle, checked_handle()).set(opt, std::forward<Args>(args)...);
    }

    template<class Opt, class... Args>
    ZMQ_NODISCARD decltype(auto) get(Opt opt, Args&&... args) const
    {
        auto value = zmq::socket_ref(zmq::from_handle, checked_handle())
                         .get(opt, std::forward<Args>(args)...);
        // Reading ZMQ_EVENTS consumes the edge that would have woken waiters.
        if constexpr (std::is_same_v<Opt, zmq::sockopt::events_t>)
            events_read();
        return value;
    }

    void bind(const std::string& addr) { bind(addr.c_str()); }
    void bind(const char* addr);
    void unbind(const std::string& addr) { unbind(addr.c_str()); }
    void unbind(const char* addr);
    void connect(const std::string& addr) { connect(addr.c_str()); }
    void connect(const char* addr);
    void disconnect(const std::string& addr) { disconnect(addr.c_str()); }
    void disconnect(const char* addr);

    send_result_t send(const_buffer buf, send_flags flags = send_flags::none);
    send_result_t send(message_t& msg, send_flags flags = send_flags::none);
    send_result_t send(message_t&& msg, send_flags flags = send_flags::none)
    {
        return send(msg, flags);
    }

    ZMQ_NODISCARD recv_buffer_result_t recv(mutable_buffer buf,
                                            recv_flags flags = recv_flags::none);
    ZMQ_NODISCARD recv_result_t recv(message_t& msg, recv_flags flags = recv_flags::none);

    // Wait up to timeout (-1: forever) for any of events (ZMQ_POLLIN,
    // ZMQ_POLLOUT); returns those that are ready, 0 on timeout.
    short poll(short events = ZMQ_POLLIN,
               std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});

    ZMQ_NODISCARD void* handle() const noexcept;
    explicit operator bool() const noexcept { return handle() != nullptr; }
    // As cppzmq's: without it, `if (s)` on a non-const socket_t would pick the
    // owner-checked operator void*.
    explicit operator bool() noexcept { return handle() != nullptr; }

    detail::socket_core* core() const noexcept { return core_; }

protected:
    socket_base() noexcept = default;
    explicit socket_base(socket_core* core) noexcept : core_(core) {}

    socket_core* core_ = nullptr;

    void* checked_handle() const;
    // The core of an open socket owned by this thread; ENOTSOCK otherwise.
    socket_core& checked_core() const;

private:
    friend class message_frames;
    friend class zmq::green::monitor_t;

    void events_read() const noexcept;
    // Ends the message the fiber caller left unfinished, if it did.
    void end_message(boost::fibers::context* caller) noexcept;
};

// The frames of one message, sent or received one after the other by the
// same fiber (send_multipart, recv_multipart): the fiber is looked up once
// for the message instead of once per frame. Otherwise as socket_base's
// send and recv, except that a message left unfinished when it goes is
// ended: the rest of a received message is dropped, and a message being sent
// gets an empty last frame, so that the next fiber's message stays whole.
class message_frames {
public:
    // Keeps the socket's state alive until the message ends: another fiber
    // may close the socket while this one is between two frames (in an
    // output iterator that parks, say), and the next frame is then ENOTSOCK.
    explicit message_frames(socket_base& socket) noexcept;
    // An exception between two frames (a throwing output iterator or range,
    // recv_multipart_n's "too many parts") must not leave the direction
    // owned by a fiber that will never send or receive its last frame.
    ~message_frames();
    message_frames(const message_frames&) = delete;
    message_frames& operator=(const message_frames&) = delete;

    send_result_t send(const_buffer buf, send_flags flags);
    send_result_t send(message_t& msg, send_flags flags);
    recv_buffer_result_t recv(mutable_buffer buf, recv_flags flags);
    recv_result_t recv(message_t& msg, recv_flags flags);
    // The caller goes on with the message in later sends (send_multipart
    // with sndmore): it is not ended here, and the direction stays the
    // fiber's until its last frame.
    void leave_open() noexcept { open_ = false; }

private:
    socket_base& socket_;
    socket_core* held_; // retained; null if none, or another thread's
    boost::fibers::context* caller_ = nullptr;
    // The last frame left the message open. False after a frame that threw:
    // that call gave up the direction, or found the socket closed.
    bool open_ = false;
};

} // namespace detail

// Owns a libzmq socket, registered with the hub of the thread that creates
// it. Using it from another thread throws zmq::green::thread_error.
// Unlike cppzmq's socket_t it does not convert to zmq::socket_ref: blocking
// cppzmq helpers would stall the whole thread. Use zmq::green's own.
class socket_t : public detail::socket_base {
public:
    socket_t() noexcept = default;
    socket_t(context_t& context, int type) : socket_t(context.core(), type) {}
    socket_t(context_t& context, socket_type type) : socket_t(context, static_cast<int>(type)) {}
    ~socket_t() { close(); }

    socket_t(socket_t&& other) noexcept : socket_base(std::exchange(other.core_, nullptr)) {}
    // Throws thread_error on a thread that does not own the socket it
    // replaces, which stays open (as close() leaves it) rather than lost.
    socket_t& operator=(socket_t&& other)
    {
        if (this != &other) {
            check_replaceable();
            close();
            core_ = std::exchange(other.core_, nullptr);
        }
        return *this;
    }
    socket_t(const socket_t&) = delete;
    socket_t& operator=(const socket_t&) = delete;

    // Fibers parked on the socket wake with zmq::error_t(ENOTSOCK).
    void close() noexcept;

    void swap(socket_t& other) noexcept { std::swap(core_, other.core_); }

    // For zmq_pollitem_t. Throws thread_error on a foreign thread: the item
    // would make that thread consume this socket's signals.
    operator void*();
    operator void const*() const;

private:
    void check_replaceable() const;
    friend class monitor_t;
    // A socket of the context behind ctx: monitor_t's, of its socket's.
    socket_t(const std::shared_ptr<detail::context_core>& ctx, int type);
};

inline void swap(socket_t& a, socket_t& b) noexcept { a.swap(b); }

// A non-owning reference to a green socket, as cppzmq's socket_ref.
class socket_ref : public detail::socket_base {
public:
    socket_ref() noexcept = default;
    // As cppzmq's: an empty reference, e.g. for a proxy's missing capture.
    socket_ref(std::nullptr_t) noexcept {}
    socket_ref(socket_t& socket) noexcept : socket_base(socket.core()) {}
    // cppzmq's socket_t converts to socket_ref as an rvalue too (a call's
    // f(std::move(s))); the reference lasts as long as the socket does.
    socket_ref(socket_t&& socket) noexcept : socket_base(socket.core()) {}
};

// As cppzmq's: an fd's poller_event has a null socket.
inline bool operator==(const socket_ref& s, std::nullptr_t) noexcept { return !s; }
inline bool operator==(std::nullptr_t, const socket_ref& s) noexcept { return !s; }
inline bool operator!=(const socket_ref& s, std::nullptr_t) noexcept { return bool(s); }
inline bool operator!=(std::nullptr_t, const socket_ref& s) noexcept { return bool(s); }

inline bool operator==(const detail::socket_base& a, const detail::socket_base& b) noexcept
{
    return a.core() == b.core();
}
inline bool operator!=(const detail::socket_base& a, const detail::socket_base& b) noexcept
{
    return !(a == b);
}

} // namespace zmq::green

template<> struct std::hash<zmq::green::socket_ref> {
    std::size_t operator()(const zmq::green::socket_ref& s) const noexcept
    {
        return std::hash<const void*>()(s.core());
    }
};
