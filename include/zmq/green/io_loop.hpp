// A tornado-style callback loop (pyzmq's IOLoop) running in a fiber of the hub.
#pragma once

#include <zmq/green/socket.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>

namespace zmq::green {

namespace detail {
struct loop_state;
struct loop_timer;
struct loop_access;
struct periodic_state;
} // namespace detail

// Names a timeout for io_loop::remove_timeout. Keeps nothing alive.
class timeout_handle {
public:
    timeout_handle() noexcept = default;

private:
    friend class io_loop;
    explicit timeout_handle(std::weak_ptr<detail::loop_timer> t) noexcept : timer_(std::move(t)) {}
    std::weak_ptr<detail::loop_timer> timer_;
};

struct io_loop_stats {
    std::uint64_t iterations = 0;
    std::uint64_t parks = 0;   // times the loop fiber waited for something to happen
    std::uint64_t rescues = 0; // handlers found ready by the fallback re-check, no edge seen
    // Level reads of handlers' sockets (ZMQ_EVENTS) and fds (poll): only of
    // those that may have changed since the last read, or were ready then.
    std::uint64_t level_checks = 0;
};

// Runs callbacks, timeouts and I/O handlers in the fiber that calls start().
// While it waits, the other fibers of its thread run. Belongs to the thread
// that creates it: only add_callback() and stop() may be called elsewhere;
// the other calls throw thread_error there.
// Destroy the streams and handlers' owners before the loop, and the loop
// only once start() has returned: destroying a running loop terminates the
// process, naming the mistake.
class io_loop {
public:
    using clock = std::chrono::steady_clock;
    using callback = std::function<void()>;
    // Called with the ready events (ZMQ_POLLIN, ZMQ_POLLOUT, ZMQ_POLLERR).
    using handler = std::function<void(short events)>;
    using error_handler = std::function<void(std::exception_ptr)>;

    io_loop();
    ~io_loop();
    io_loop(const io_loop&) = delete;
    io_loop& operator=(const io_loop&) = delete;

    // The loop running in the calling fiber (its callbacks, handlers and
    // timeouts), else the last loop started in this thread that still runs,
    // else this thread's default loop (created on first use).
    static io_loop& current();
    static clock::time_point time() noexcept { return clock::now(); }

    // Runs the loop until stop(). Throws std::logic_error if it is already
    // running or closed.
    void start();
    // Makes start() return once the callbacks and timeouts already due have
    // run. Any thread. Made while the loop is not running, it ends the next
    // start() after one iteration, as in tornado.
    void stop() noexcept;
    bool running() const noexcept;
    // Drops every handler, callback and timeout; with all_fds, also closes
    // the registered sockets and fds. The loop cannot start again: handlers
    // and timeouts given to it then throw std::logic_error, and callbacks are
    // dropped, as in tornado.
    void close(bool all_fds = false);
    bool closed() const noexcept;

    // Runs fn in a new fiber of this thread and the loop until fn returns,
    // then rethrows what fn threw. Throws timeout_error if the timeout (-1:
    // none) or a scoped timeout passes first, std::runtime_error if stop()
    // ends the loop first (as tornado); fn's fiber is then left to finish on
    // its own.
    void run_sync(std::function<void()> fn,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});

    // A socket handler is level-triggered: it is called on every iteration
    // while the socket's ZMQ_EVENTS intersects events. If the socket is closed
    // or its context terminated, the handler gets ZMQ_POLLERR once and is
    // removed. One handler per socket or fd (std::invalid_argument otherwise).
    void add_handler(socket_ref socket, handler fn, short events);
    // A raw fd handler is level-triggered too (ZMQ_POLLERR is always added).
    // The fd joins the hub's epoll set until the handler goes: remove the
    // handler before closing the fd. (If not, the fallback re-check finds the
    // fd gone and gives the handler ZMQ_POLLERR once; a number reused by a
    // new file meanwhile defeats that.)
    // std::system_error if epoll refuses the fd (not open, a regular file, a
    // green socket's fd).
    void add_handler(int fd, handler fn, short events);
    void update_handler(socket_ref socket, short events);
    void update_handler(int fd, short events);
    // Unknown sockets and fds are ignored, as in pyzmq.
    void remove_handler(socket_ref socket);
    void remove_handler(int fd);

    // Safe from any thread. Runs fn on the next iteration; callbacks added
    // while callbacks run wait for the iteration after.
    void add_callback(callback fn);

    // fn runs once, after delay / at when, and never in the iteration that
    // added it. Equal deadlines run in the order they were added.
    timeout_handle call_later(clock::duration delay, callback fn);
    timeout_handle call_at(clock::time_point when, callback fn);
    // Safe for a timeout that already ran or was already removed;
    // std::invalid_argument for a pending timeout of another loop.
    void remove_timeout(const timeout_handle& handle);

    // Receives every exception thrown by a handler, callback or timeout; the
    // loop then goes on. The default prints one line on stderr. An empty
    // function restores the default.
    void set_error_handler(error_handler fn);
    // Reports the current exception (or e) through the error handler. On the
    // loop's thread only: the error handler belongs to it.
    void handle_exception(std::exception_ptr e);

    // While the loop waits on sockets, it re-checks them after sleeping this
    // long, bounding the stall a lost edge could cause; with nothing between
    // re-checks, each comes four times later, up to 64 times this. Zero
    // disables. Default 1 s. Set on the loop's thread; read on any.
    void set_fallback_interval(std::chrono::milliseconds interval);
    std::chrono::milliseconds fallback_interval() const noexcept;

    // Readable from any thread (a monitoring one) while the loop lives.
    io_loop_stats stats() const noexcept;

private:
    friend struct detail::loop_access;
    std::unique_ptr<detail::loop_state> s_;
};

// Calls fn every period while started. The first call comes one period after
// start(); when the loop falls behind, missed calls are skipped, not made up.
// Belongs to the loop's thread: made on another, it throws thread_error.
class periodic_callback {
public:
    periodic_callback(io_loop& loop, std::function<void()> fn, std::chrono::milliseconds period);
    ~periodic_callback(); // stops; fn may destroy its periodic_callback
    periodic_callback(const periodic_callback&) = delete;
    periodic_callback& operator=(const periodic_callback&) = delete;

    // std::logic_error once the loop is closed.
    void start();
    void stop();
    bool is_running() const noexcept;

private:
    std::shared_ptr<detail::periodic_state> s_;
};

} // namespace zmq::green
