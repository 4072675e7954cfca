#include <zmq/green/timeout.hpp>

#include "reactor.hpp"

#include <algorithm>

namespace zmq::green {

scoped_timeout::clock::time_point scoped_timeout::from_now(clock::duration timeout)
{
    if (timeout.count() < 0)
        throw std::invalid_argument("zmq::green::scoped_timeout: negative timeout");
    return clock::now() + timeout;
}

scoped_timeout::scoped_timeout(clock::time_point deadline)
    : state_(&hub::current().reactor()->attach_fiber_state()), deadline_(deadline),
      outer_(state_->deadline)
{
    state_->deadline = std::min(outer_, deadline_);
}

scoped_timeout::~scoped_timeout()
{
    state_->deadline = outer_;
    // The hub outlives every fiber of its thread, and so this scope.
    detail::reactor::current()->detach_fiber_state(*state_);
}

void sleep_until(std::chrono::steady_clock::time_point deadline)
{
    auto& r = *hub::current().reactor();
    detail::park_slot slot;
    slot.deadline = deadline;
    detail::throw_if_interrupted(r.park(slot));
}

} // namespace zmq::green
