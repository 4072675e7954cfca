#include <zmq/green/timeout.hpp>

#include "reactor.hpp"

#include <algorithm>
#include <string>

namespace zmq::green {

void detail::throw_bad_duration(const char* what, const char* why)
{
    throw std::invalid_argument(std::string("zmq::green::") + what + ": " + why + " duration");
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
