// pyzmq's ZMQStream: callbacks for a socket's messages, driven by an io_loop.
#pragma once

#include <zmq/green/io_loop.hpp>
#include <zmq/green/socket.hpp>

#include <zmq.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zmq::green {

namespace detail {
struct stream_state;
}

// The outcome of one queued send, as pyzmq's on_send status.
struct send_status {
    int error = 0; // errno of the failed send; 0 when the message was queued in libzmq
    explicit operator bool() const noexcept { return error == 0; }
    std::string message() const { return error == 0 ? "ok" : zmq_strerror(error); }
};

// Wraps a green socket for callback-style use on an io_loop. Receiving starts
// when on_recv (or a variant) is set; sends are queued and performed by the
// loop. Each loop iteration does at most 32 receives and 32 sends per
// stream, so a busy stream cannot starve the others; a burst also ends when
// a callback stops the loop. Destroying the stream (even inside its own
// callback) closes it. The stream belongs to its socket's thread: calls from
// another thread throw thread_error, and destroying it there terminates.
class zmq_stream {
public:
    using message = std::vector<zmq::message_t>;
    // The frames are the received ones, not copies: move them out freely.
    using recv_callback = std::function<void(message& msg)>;
    using recv_string_callback = std::function<void(std::vector<std::string>& msg)>;
    using recv_stream_callback = std::function<void(zmq_stream& stream, message& msg)>;
    // msg is the message as queued; status says whether libzmq took it.
    using send_callback = std::function<void(const message& msg, const send_status& status)>;
    using send_stream_callback =
        std::function<void(zmq_stream& stream, const message& msg, const send_status& status)>;
    using close_callback = std::function<void()>;

    // Takes the socket: close() closes it.
    explicit zmq_stream(socket_t&& socket, io_loop& loop = io_loop::current());
    // Uses a socket owned elsewhere: close() only detaches from it.
    explicit zmq_stream(socket_ref socket, io_loop& loop = io_loop::current());
    ~zmq_stream();
    zmq_stream(const zmq_stream&) = delete;
    zmq_stream& operator=(const zmq_stream&) = delete;

    // An empty function pauses receiving: messages wait in libzmq, and its
    // high-water mark pushes back on the senders. Setting one again resumes,
    // delivering what was already waiting. Throws std::logic_error once closed.
    void on_recv(recv_callback fn);
    void on_recv_strings(recv_string_callback fn);
    void on_recv_stream(recv_stream_callback fn);
    void stop_on_recv() { on_recv(nullptr); }

    void on_send(send_callback fn);
    void on_send_stream(send_stream_callback fn);
    void stop_on_send() { on_send(nullptr); }

    // Queue a message; a later loop iteration sends it, never this call. A
    // callback given here replaces on_send for good, as in pyzmq. A socket
    // type that cannot send (PULL, SUB) throws zmq::error_t(ENOTSUP).
    void send(zmq::message_t msg, send_callback fn = {});
    void send_multipart(message msg, send_callback fn = {});
    void send_string(const std::string& s, send_callback fn = {});

    // Handles pending events now: receives (dropping messages if no callback
    // is set when it starts; a callback that removes itself ends the
    // receiving) and sends while the socket allows, at most limit of them in
    // all (0: no limit). Returns how many it handled. Until the next iteration's
    // callbacks, the loop then skips this stream's own dispatch. Nested 16
    // deep in the stream's own callbacks, in the calling fiber, a callback's
    // first flush handles nothing and returns 0: the flush below it or the
    // loop's next turn does. Its next flushes (a loop waiting for a reply)
    // nest deeper, and past 32 levels throw std::runtime_error.
    std::size_t flush(short events = ZMQ_POLLIN | ZMQ_POLLOUT, std::size_t limit = 0);

    void set_close_callback(close_callback fn);
    // Unregisters from the loop, closes an owned socket (with linger, if
    // given), then calls the close callback. Idempotent.
    void close(std::optional<int> linger = std::nullopt);
    // True once closed; a socket closed behind the stream's back closes it.
    bool closed();
    bool receiving() const noexcept;
    bool sending() const noexcept;
    std::size_t queued() const noexcept;

    socket_ref socket() const;
    io_loop& loop() const noexcept;

    void bind(const std::string& addr) { socket().bind(addr); }
    void connect(const std::string& addr) { socket().connect(addr); }
    template<class Opt, class... Args>
    void set(Opt opt, Args&&... args)
    {
        socket().set(opt, std::forward<Args>(args)...);
    }
    template<class Opt, class... Args>
    decltype(auto) get(Opt opt, Args&&... args) const
    {
        return socket().get(opt, std::forward<Args>(args)...);
    }

private:
    std::shared_ptr<detail::stream_state> s_;
};

} // namespace zmq::green
