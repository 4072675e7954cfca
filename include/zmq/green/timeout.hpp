// Deadlines for whole stretches of green code (gevent's Timeout), and sleeps
// that honour them.
#pragma once

#include <chrono>
#include <stdexcept>

namespace zmq::green {

namespace detail {
struct fiber_state;
}

// Thrown by a green wait (socket send/recv, poll, fd waits, sleep, event,
// join, io_loop::run_sync, devices) that would run past the deadline of a
// scoped_timeout of its fiber.
class timeout_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Sets a deadline for the green waits of the calling fiber until the scope
// ends. Scopes nest: the earliest deadline wins. Code that is not waiting is
// never interrupted, and a multipart send that has begun is finished first.
// Leaving the scope leaves nothing behind. Create and destroy it on the
// same fiber, as a local.
//
//     try {
//         zmq::green::scoped_timeout limit(100ms);
//         sock.recv(msg);
//     } catch (const zmq::green::timeout_error&) { ... }
class scoped_timeout {
public:
    using clock = std::chrono::steady_clock;

    // Throws std::invalid_argument for a negative duration.
    template<class Rep, class Period>
    explicit scoped_timeout(std::chrono::duration<Rep, Period> timeout)
        : scoped_timeout(from_now(std::chrono::ceil<clock::duration>(timeout)))
    {
    }
    explicit scoped_timeout(clock::time_point deadline);
    ~scoped_timeout();
    scoped_timeout(const scoped_timeout&) = delete;
    scoped_timeout& operator=(const scoped_timeout&) = delete;

    clock::time_point deadline() const noexcept { return deadline_; }
    // This scope's own deadline has passed: a timeout_error caught here is
    // this scope's, not an outer one's, when expired() is true and the
    // outer deadline is later.
    bool expired() const noexcept { return clock::now() >= deadline_; }

private:
    static clock::time_point from_now(clock::duration timeout);

    detail::fiber_state* state_;
    clock::time_point deadline_;
    clock::time_point outer_;
};

// Green sleeps: other fibers run meanwhile, and unlike
// boost::this_fiber::sleep_for they end early with timeout_error or
// fiber_cancelled when a scoped timeout or a kill interrupts them.
void sleep_until(std::chrono::steady_clock::time_point deadline);
template<class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> duration)
{
    if (duration.count() < 0)
        throw std::invalid_argument("zmq::green::sleep_for: negative duration");
    sleep_until(std::chrono::steady_clock::now()
                + std::chrono::ceil<std::chrono::steady_clock::duration>(duration));
}

} // namespace zmq::green
