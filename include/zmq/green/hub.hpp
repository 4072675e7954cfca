// The per-thread fiber scheduler that waits in epoll.
#pragma once

#include <boost/fiber/algo/algorithm.hpp>
#include <boost/fiber/scheduler.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>

namespace zmq::green {

namespace detail {
class reactor;
}

// Thrown when a green object is used from a thread that does not own it.
// libzmq sockets are not thread-safe, and a socket's wake-ups are delivered
// by the hub of the thread that created it.
class thread_error : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

struct hub_stats {
    std::uint64_t fd_wakeups = 0;     // fibers made ready by a socket or fd event
    std::uint64_t timer_wakeups = 0;  // fibers made ready because their deadline passed
    std::uint64_t remote_wakeups = 0; // wake-ups requested by other threads
    std::uint64_t rescues = 0;        // waits the fallback re-check ended that no edge reported
    std::uint64_t rechecks = 0;       // fallback re-checks made
};

// A Boost.Fiber scheduling algorithm: round-robin over ready fibers, and when
// none is ready, epoll_wait on the fds fibers wait for until the earliest
// deadline. One per thread; the first green call on a thread installs it. A
// hub installed over it (use_scheduling_algorithm) takes over the thread's
// sockets, fd waits and parked fibers; another algorithm would strand them.
// Make one only through use_scheduling_algorithm: a hub object that Boost
// does not run takes the thread's events while it lives.
class hub final : public boost::fibers::algo::algorithm {
public:
    hub();
    ~hub() override;
    hub(const hub&) = delete;
    hub& operator=(const hub&) = delete;

    // This thread's hub, installed with use_scheduling_algorithm on first use.
    // Throws std::system_error if the kernel gives it no epoll set or
    // eventfd (EMFILE at RLIMIT_NOFILE); an explicit use_scheduling_algorithm
    // is noexcept, and ends the process then.
    static hub& current();
    // This thread's hub, or nullptr if none is installed.
    static hub* installed() noexcept;

    void awakened(boost::fibers::context* ctx) noexcept override;
    boost::fibers::context* pick_next() noexcept override;
    bool has_ready_fibers() const noexcept override;
    void suspend_until(std::chrono::steady_clock::time_point const& abs_time) noexcept override;
    void notify() noexcept override;

    // Readable from any thread (a monitoring one) while the hub lives.
    hub_stats stats() const noexcept;

    // How soon after activity (an event, a new socket or fd wait) parked
    // socket and fd waits are re-checked for an edge that epoll did not
    // deliver, and fd waits for an fd closed under them (which then end with
    // EBADF). With no more activity, each re-check comes four times later
    // than the last, up to 64 times this: an idle hub all but stops waking.
    // Zero disables the re-check. Default: one second. Throws thread_error
    // on a thread other than the hub's; fallback_interval() reads from any.
    void set_fallback_interval(std::chrono::milliseconds interval);
    std::chrono::milliseconds fallback_interval() const noexcept;

    const std::shared_ptr<detail::reactor>& reactor() const noexcept { return reactor_; }

private:
    friend class detail::reactor; // asks whether other fibers are ready

    boost::fibers::scheduler::ready_queue_type rqueue_{};
    std::shared_ptr<detail::reactor> reactor_;
    hub* older_; // the thread's hub before this one, while it lives
    bool dispatcher_queued_ = false;
};

// Park the calling fiber until fd is readable (writable), or the timeout
// passes (-1: no timeout). Returns false on timeout. Other fibers keep running.
bool wait_readable(int fd, std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});
bool wait_writable(int fd, std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});

} // namespace zmq::green
