// Deadlines for whole stretches of green code (gevent's Timeout), and sleeps
// that honour them.
#pragma once

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <type_traits>

namespace zmq::green {

namespace detail {
struct fiber_state;

// std::invalid_argument: "zmq::green::<what>: <why> duration".
[[noreturn]] void throw_bad_duration(const char* what, const char* why);

// now + duration, or time_point::max() (never) for a duration of half the
// clock's remaining range or more, about 146 years. The comparison is made in
// long double, which holds any integer Rep exactly: in Rep itself the range
// would overflow a narrow type, and in nanoseconds std::chrono::hours::max()
// would overflow into the past. Half the range leaves room for the rounding
// of the comparison and of ceil. duration must be neither negative nor NaN.
template<class Rep, class Period>
std::chrono::steady_clock::time_point saturating_deadline(std::chrono::duration<Rep, Period> duration)
{
    using steady = std::chrono::steady_clock;
    using wide = std::chrono::duration<long double, Period>;
    const auto now = steady::now();
    const wide half_room = std::chrono::duration_cast<wide>(steady::time_point::max() - now) / 2;
    if (wide(duration) >= half_room)
        return steady::time_point::max();
    return now + std::chrono::ceil<steady::duration>(duration);
}

// saturating_deadline of a public call's duration: std::invalid_argument
// naming the call if it is negative or not a number.
template<class Rep, class Period>
std::chrono::steady_clock::time_point deadline_in(std::chrono::duration<Rep, Period> duration,
                                                  const char* what)
{
    if (duration.count() < 0)
        throw_bad_duration(what, "negative");
    if constexpr (std::is_floating_point_v<Rep>)
        if (std::isnan(duration.count()))
            throw_bad_duration(what, "NaN");
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
// never interrupted, and a multipart send that has begun is finished first:
// libzmq takes its later frames at once, unless the message's peer has gone
// (then a wait for another could be endless, and the interrupted message is
// ended with an empty last frame). Leaving the scope leaves nothing behind.
// Create and destroy it on the same fiber, normally as a local; scopes
// ended out of order (held by pointers) leave the earliest deadline of
// those still alive.
//
//     try {
//         zmq::green::scoped_timeout limit(100ms);
//         sock.recv(msg);
//     } catch (const zmq::green::timeout_error&) { ... }
class scoped_timeout {
public:
    using clock = std::chrono::steady_clock;

    // Throws std::invalid_argument for a negative or NaN duration; one of a
    // century or more may never expire (saturating_deadline).
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
    scoped_timeout* outer_scope_; // the fiber's scopes, innermost first
};

// Green sleeps: other fibers run meanwhile, and unlike
// boost::this_fiber::sleep_for they end early with timeout_error or
// fiber_cancelled when a scoped timeout or a kill interrupts them. A
// duration of a century or more may sleep until killed or interrupted.
void sleep_until(std::chrono::steady_clock::time_point deadline);
template<class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> duration)
{
    sleep_until(detail::deadline_in(duration, "sleep_for"));
}

} // namespace zmq::green
