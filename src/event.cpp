#include <zmq/green/event.hpp>

#include "reactor.hpp"

namespace zmq::green {

event::event() : waiters_(std::make_unique<detail::wait_queue>("event")) {}

event::~event() = default;

void event::set()
{
    waiters_->check_thread("event::set");
    set_ = true;
    waiters_->notify_all();
}

void event::clear()
{
    waiters_->check_thread("event::clear");
    set_ = false;
}

bool event::wait(std::chrono::milliseconds timeout)
{
    waiters_->check_thread("event::wait");
    const auto deadline = detail::wait_deadline(timeout, "event::wait");
    if (set_)
        return true;
    // A set() followed by clear() before this fiber runs still counts. If
    // the event goes meanwhile, wait() throws before set_ is read.
    return waiters_->wait(deadline) || set_;
}

} // namespace zmq::green
