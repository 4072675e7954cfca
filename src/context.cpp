#include <zmq/green/context.hpp>
#include <zmq/green/hub.hpp>

#include "context_core.hpp"
#include "reactor.hpp"
#include "socket_core.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace zmq::green {

namespace {

std::shared_ptr<detail::context_core> make_core()
{
    void* h = zmq_ctx_new();
    if (h == nullptr)
        throw zmq::error_t();
    return std::make_shared<detail::context_core>(h);
}

void set_option(void* h, int option, int value)
{
    if (zmq_ctx_set(h, option, value) != 0)
        throw zmq::error_t();
}

void term(void* h) noexcept
{
    while (zmq_ctx_term(h) != 0 && errno == EINTR) {
    }
}

// zmq_ctx_term can still block on LINGER: a helper thread waits for it while
// the calling fiber parks. The helper reports through an eventfd the hub
// watches, not a fiber promise: that would give the helper thread a
// Boost.Fiber scheduler, and Boost 1.74's round_robin::notify() signals its
// condition variable after unlocking its mutex, so the fiber waking the
// helper could touch that scheduler after the helper thread had ended
// (found by ThreadSanitizer). Without a hub there is no green socket on
// this thread, and the thread itself waits.
void term_in_helper(void* h) noexcept
{
    const int done = hub::installed() ? ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
    std::thread helper([h, done] {
        term(h);
        if (done >= 0) {
            const std::uint64_t one = 1;
            [[maybe_unused]] const auto rc = ::write(done, &one, sizeof one);
        }
    });
    if (done >= 0) {
        try {
            // Uninterruptible: close() is noexcept, so a scoped timeout or a
            // kill ending this wait would only leave join() below to block
            // the thread, every fiber on it, for the rest of the linger. They
            // stay pending for the fiber's next green wait instead.
            detail::reactor::current()->wait_fd(done, ZMQ_POLLIN, detail::no_deadline, false);
        } catch (...) {
            // The hub could not watch the fd: wait in join() instead.
        }
    }
    helper.join();
    if (done >= 0)
        ::close(done);
}

} // namespace

context_t::context_t() : core_(make_core()) {}

context_t::context_t(int io_threads, int max_sockets) : core_(make_core())
{
    try {
        set_option(core_->handle, ZMQ_IO_THREADS, io_threads);
        set_option(core_->handle, ZMQ_MAX_SOCKETS, max_sockets);
    } catch (...) {
        term(core_->handle);
        throw;
    }
}

context_t::~context_t() { close(); }

context_t::context_t(context_t&& other) noexcept
    : core_(std::move(other.core_)), closing_(std::move(other.closing_))
{
}

context_t& context_t::operator=(context_t&& other) noexcept
{
    if (this != &other) {
        close();
        core_ = std::move(other.core_);
        closing_ = std::move(other.closing_);
    }
    return *this;
}

void context_t::set(zmq::ctxopt option, int value)
{
    if (!core_)
        throw zmq::error_t(EFAULT);
    set_option(core_->handle, static_cast<int>(option), value);
}

int context_t::get(zmq::ctxopt option) const
{
    if (!core_)
        throw zmq::error_t(EFAULT);
    const int rc = zmq_ctx_get(core_->handle, static_cast<int>(option));
    if (rc == -1)
        throw zmq::error_t();
    return rc;
}

void context_t::shutdown() noexcept
{
    if (core_)
        zmq_ctx_shutdown(core_->handle);
}

void context_t::destroy() { destroy_with(nullptr); }

void context_t::destroy(std::chrono::milliseconds linger)
{
    detail::check_wait_timeout(linger, "context_t::destroy", "linger");
    if (linger.count() > std::numeric_limits<int>::max()) // ZMQ_LINGER is an int
        throw std::invalid_argument("zmq::green::context_t::destroy: linger "
                                    + std::to_string(linger.count()) + " ms is beyond ZMQ_LINGER");
    const int ms = static_cast<int>(linger.count());
    destroy_with(&ms);
}

void context_t::destroy_with(const int* linger)
{
    const std::shared_ptr<detail::context_core> core = core_ ? core_ : closing_.lock();
    if (!core)
        return;
    if (detail::reactor* r = detail::reactor::current()) {
        // Before the shutdown in close(): libzmq refuses options from then on
        // (a close() in progress has shut down already: linger is too late).
        for (detail::socket_core* s : r->sockets_of(*core)) {
            if (linger != nullptr)
                zmq_setsockopt(s->handle, ZMQ_LINGER, linger, sizeof *linger);
            s->close();
        }
    }
    close();
}

void* context_t::handle() noexcept { return core_ ? core_->handle : nullptr; }

context_t::operator void const*() const noexcept { return core_ ? core_->handle : nullptr; }

void context_t::close() noexcept
{
    if (!core_)
        return;
    const auto core = std::move(core_);
    // The wait below must not touch *this: another fiber may destroy it.
    closing_ = core;
    zmq_ctx_shutdown(core->handle);
    // A monitor's socket is closed only by its monitor, which may never be
    // read or destroyed before this close(): its events are lost to the
    // shutdown anyway.
    if (detail::reactor* r = detail::reactor::current())
        for (detail::socket_core* s : r->sockets_of(*core))
            if (s->of_monitor)
                s->close();
    if (hub::installed() == nullptr && core->open_sockets.load() == 0) {
        // No fiber can run here (or the thread is exiting): nothing to park.
        term(core->handle);
        return;
    }
    {
        std::unique_lock<boost::fibers::mutex> lock(core->mutex);
        core->closing.store(true);
        core->all_closed.wait(lock, [&] { return core->open_sockets.load() == 0; });
    }
    term_in_helper(core->handle);
}

} // namespace zmq::green
