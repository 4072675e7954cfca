#include <zmq/green/hub.hpp>

#include "reactor.hpp"

#include <boost/fiber/operations.hpp>
#include <boost/fiber/type.hpp>

#include <zmq.h>

#include <cassert>
#include <stdexcept>

namespace zmq::green {

namespace {

// The newest live hub of the thread, which serves its reactor; each hub
// links to the one that was newest before it (hub::older_). A plain pointer,
// unlike a container, outlives every hub at thread exit.
thread_local hub* this_thread_hub = nullptr;

// The reactor hub::current() made for the hub it installs: made there, a
// failure (no fds left) is an exception for the caller, where in the hub's
// constructor it would end the process, use_scheduling_algorithm being
// noexcept.
thread_local std::shared_ptr<detail::reactor> prepared_reactor;

// A hub installed over this thread's hub takes its reactor over: the
// thread's sockets, fd waits and parked fibers are registered there, and
// would otherwise be left to a hub that is about to go.
std::shared_ptr<detail::reactor> reactor_for_new_hub()
{
    if (this_thread_hub != nullptr)
        return this_thread_hub->reactor();
    if (prepared_reactor)
        return std::move(prepared_reactor);
    return std::make_shared<detail::reactor>();
}

} // namespace

hub::hub() : reactor_(reactor_for_new_hub()), older_(this_thread_hub)
{
    reactor_->attach_hub(*this);
    this_thread_hub = this;
}

// Boost destroys the hub it replaced; a hub it never installed (made by
// mistake) goes while the installed one still runs the thread, which must
// then serve the thread's sockets again.
hub::~hub()
{
    if (this_thread_hub == this) {
        reactor_->detach_hub(*this);
        this_thread_hub = older_;
        if (older_ != nullptr)
            reactor_->attach_hub(*older_);
        return;
    }
    for (hub* h = this_thread_hub; h != nullptr; h = h->older_) {
        if (h->older_ == this) {
            h->older_ = older_;
            break;
        }
    }
}

hub& hub::current()
{
    if (this_thread_hub == nullptr) {
        prepared_reactor = std::make_shared<detail::reactor>();
        boost::fibers::use_scheduling_algorithm<hub>();
    }
    return *this_thread_hub;
}

hub* hub::installed() noexcept { return this_thread_hub; }

// Boost.Fiber keeps its dispatcher in the ready queue while any other fiber
// runs, so pick_next is the dispatcher's call exactly when the dispatcher is
// not queued. Tracking that here spares a context::active() per switch (two
// thread-local lookups in a shared library); debug builds check it.
void hub::awakened(boost::fibers::context* ctx) noexcept
{
    if (ctx->is_context(boost::fibers::type::dispatcher_context))
        dispatcher_queued_ = true;
    ctx->ready_link(rqueue_);
}

boost::fibers::context* hub::pick_next() noexcept
{
    // The dispatcher picks once per round of the ready queue. Unless its
    // previous turn polled (or blocked), look for fd events without
    // blocking, so that fibers that never park cannot starve the ones waiting
    // for an fd: a poll every second round, half the syscalls of a poll per
    // round. The fibers that yielded behind this poll follow the ones it woke.
    // A hub replaced by another is emptied by the fiber that installs the new
    // one, not by the dispatcher, and polls for no reactor: it only hands its
    // queue over.
    if (reactor_->serves(*this)) {
        const bool by_dispatcher = !dispatcher_queued_;
        assert(by_dispatcher
               == boost::fibers::context::active()->is_context(
                   boost::fibers::type::dispatcher_context));
        if (by_dispatcher && (!rqueue_.empty() || reactor_->has_deferred())) {
            reactor_->poll_unless_fresh();
            reactor_->release_deferred();
        }
    }
    if (rqueue_.empty())
        return nullptr;
    boost::fibers::context* ctx = &rqueue_.front();
    rqueue_.pop_front();
    if (ctx->is_context(boost::fibers::type::dispatcher_context))
        dispatcher_queued_ = false;
    return ctx;
}

bool hub::has_ready_fibers() const noexcept
{
    // A hub replaced by another is asked this while its ready fibers move to
    // the new one; the deferred ones are the reactor's, which has moved too.
    return !rqueue_.empty() || (reactor_->serves(*this) && reactor_->has_deferred());
}

void hub::suspend_until(std::chrono::steady_clock::time_point const& abs_time) noexcept
{
    reactor_->run(abs_time, true);
}

void hub::notify() noexcept { reactor_->notify(); }

hub_stats hub::stats() const noexcept { return reactor_->stats(); }

void hub::set_fallback_interval(std::chrono::milliseconds interval)
{
    reactor_->set_fallback_interval(interval);
}

std::chrono::milliseconds hub::fallback_interval() const noexcept
{
    return reactor_->fallback_interval();
}

namespace {

bool wait_fd(int fd, short events, std::chrono::milliseconds timeout, const char* what)
{
    const auto deadline = detail::wait_deadline(timeout, what);
    return hub::current().reactor()->wait_fd(fd, events, deadline);
}

} // namespace

bool wait_readable(int fd, std::chrono::milliseconds timeout)
{
    return wait_fd(fd, ZMQ_POLLIN, timeout, "wait_readable");
}

bool wait_writable(int fd, std::chrono::milliseconds timeout)
{
    return wait_fd(fd, ZMQ_POLLOUT, timeout, "wait_writable");
}

} // namespace zmq::green
