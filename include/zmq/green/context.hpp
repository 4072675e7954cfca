// A ZeroMQ context whose close() never blocks the hub thread.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <memory>

namespace zmq::green {

namespace detail {
struct context_core;
}

// cppzmq's context_t, except that close() (and the destructor) wait for the
// context's green sockets by parking the calling fiber, and run the blocking
// zmq_ctx_term on a helper thread. Other fibers of the thread keep running.
class context_t {
public:
    context_t();
    explicit context_t(int io_threads, int max_sockets = ZMQ_MAX_SOCKETS_DFLT);
    ~context_t();

    context_t(context_t&& other) noexcept;
    context_t& operator=(context_t&& other) noexcept;
    context_t(const context_t&) = delete;
    context_t& operator=(const context_t&) = delete;

    void set(zmq::ctxopt option, int value);
    int get(zmq::ctxopt option) const;

    // Every fiber parked on a socket of this context, on any thread, wakes
    // with zmq::error_t(ETERM). Safe to call from any thread.
    void shutdown() noexcept;

    // shutdown(), close this thread's monitor_t sockets of the context, wait
    // until every other green socket of the context is closed, then
    // terminate. Parks only the calling fiber, and to the end: a kill or
    // scoped timeout meanwhile meets the fiber at its next green wait.
    void close() noexcept;

    // pyzmq's destroy(): closes this thread's sockets of the context (their
    // parked fibers wake with ENOTSOCK), then close(). Sockets of other
    // threads are theirs to close, as libzmq sockets are not thread-safe:
    // their fibers wake with ETERM, and this call parks until they have.
    // While another fiber's close() waits, it closes the sockets that close()
    // waits for (on this thread) and returns.
    void destroy();
    // The same, with ZMQ_LINGER set to linger (-1: for ever) on each socket
    // it closes; below -1 is std::invalid_argument. During another fiber's
    // close(), libzmq refuses the option on a socket that has already seen
    // the shutdown (a fiber parked on it woke with ETERM): that one closes
    // with the linger it had, which close() then waits for.
    void destroy(std::chrono::milliseconds linger);

    void* handle() noexcept;
    explicit operator bool() const noexcept { return core_ != nullptr; }
    explicit operator void*() noexcept { return handle(); }
    explicit operator void const*() const noexcept;

    void swap(context_t& other) noexcept
    {
        core_.swap(other.core_);
        closing_.swap(other.closing_);
    }

    const std::shared_ptr<detail::context_core>& core() const noexcept { return core_; }

private:
    void destroy_with(const int* linger);

    std::shared_ptr<detail::context_core> core_;
    // The context a close() in progress waits for: destroy() from another
    // fiber meanwhile closes its sockets, which that wait may need.
    std::weak_ptr<detail::context_core> closing_;
};

inline void swap(context_t& a, context_t& b) noexcept { a.swap(b); }

} // namespace zmq::green
