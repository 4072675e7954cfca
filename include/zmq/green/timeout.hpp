// Deadlines for whole stretches of green code (gevent's Timeout), and sleeps
// that honour them.
#pragma once

#include <chrono>
#include <ratio>
#include <stdexcept>

namespace zmq::green {

namespace detail {
struct fiber_state;

[[noreturn]] void throw_negative_duration(const char* what);

// now + duration, or time_point::max() (never) past the clock's range, some
// 292 years: converted to nanoseconds first, std::chrono::hours::max() would
// overflow into the past. duration must not be negative.
template<class Rep, class Period>
std::chrono::steady_clock::time_point saturating_deadline(std::chrono::duration<Rep, Period> duration)
{
    using steady = std::chrono::steady_clock;
    const auto now = steady::now();
    const steady::duration room = steady::time_point::max() - now;
    if constexpr (std::ratio_greater<Period, steady::period>::value) {
        // Compared in the coarser unit, the caller's, which room fits in.
        if (duration >= std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(room))
            return steady::time_point::max();
    }
    const auto ns = std::chrono::ceil<steady::duration>(duration);
    return ns >= room ? steady::time_point::max() : now + ns;
}

// saturating_deadline of a public call's duration: std::invalid_argument
// naming the call if it is negative.
template<class Rep, class Period>
std::chrono::steady_clock::time_point deadline_in(std::chrono::duration<Rep, Period> duration,
                                                  const char* what)
{
    if (duration.count() < 0)
        throw_negative_duration(what);
    return saturating_deadline(duration);
}
} // namespace detail

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

    // Throws std::invalid_argument for a negative duration; one past the
    // clock's range never expires.
    template<class Rep, class Period>
    explicit scoped_timeout(std::chrono::duration<Rep, Period> timeout)
        : scoped_timeout(detail::deadline_in(timeout, "scoped_timeout"))
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
    detail::fiber_state* state_;
    clock::time_point deadline_;
    clock::time_point outer_;
};

// Green sleeps: other fibers run meanwhile, and unlike
// boost::this_fiber::sleep_for they end early with timeout_error or
// fiber_cancelled when a scoped timeout or a kill interrupts them. A
// duration past the clock's range sleeps until killed or interrupted.
void sleep_until(std::chrono::steady_clock::time_point deadline);
template<class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> duration)
{
    sleep_until(detail::deadline_in(duration, "sleep_for"));
}

} // namespace zmq::green
