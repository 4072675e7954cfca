// gevent's Event for the fibers of one thread.
#pragma once

#include <chrono>
#include <memory>

namespace zmq::green {

namespace detail {
class wait_queue;
}

// A flag fibers can wait for. Waiting is a green wait (scoped timeouts and
// kills end it). Belongs to the thread that creates it: other threads get
// thread_error and should use Boost.Fiber's primitives instead.
class event {
public:
    event();
    ~event();
    event(const event&) = delete;
    event& operator=(const event&) = delete;

    // Wakes every waiter; the flag stays set until clear().
    void set();
    void clear();
    bool is_set() const noexcept { return set_; }
    // Parks until the flag is set or the timeout passes (-1: never).
    // Returns is_set().
    bool wait(std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});

private:
    std::unique_ptr<detail::wait_queue> waiters_;
    bool set_ = false;
};

} // namespace zmq::green
