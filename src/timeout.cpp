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
      outer_scope_(state_->innermost)
{
    state_->innermost = this;
    state_->deadline = std::min(state_->deadline, deadline_);
}

scoped_timeout::~scoped_timeout()
{
    // Usually the innermost scope; one ended out of order leaves the list
    // from the middle, and the deadline is then that of the scopes left.
    scoped_timeout** link = &state_->innermost;
    while (*link != this)
        link = &(*link)->outer_scope_;
    *link = outer_scope_;
    state_->deadline = detail::no_deadline;
    for (const scoped_timeout* s = state_->innermost; s != nullptr; s = s->outer_scope_)
        state_->deadline = std::min(state_->deadline, s->deadline_);
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
