#include <zmq/green/poll.hpp>

#include "socket_core.hpp"

#include <algorithm>
#include <chrono>

namespace zmq::green {

namespace {

// zmq_poll without waiting. It reads ZMQ_EVENTS of every socket, which
// consumes signals that fibers parked on green sockets may need.
int poll_now(detail::reactor& r, zmq_pollitem_t* items, size_t nitems)
{
    int rc;
    do {
        rc = zmq_poll(items, static_cast<int>(nitems), 0);
    } while (rc < 0 && errno == EINTR);
    const int err = errno;
    for (size_t i = 0; i < nitems; ++i)
        if (items[i].socket != nullptr)
            if (auto* core = r.find_socket(items[i].socket))
                core->after_op();
    if (rc < 0)
        throw zmq::error_t(err);
    return rc;
}

short asked_events(const zmq_pollitem_t& item) noexcept
{
    return static_cast<short>(item.events & (ZMQ_POLLIN | ZMQ_POLLOUT | ZMQ_POLLERR | ZMQ_POLLPRI));
}

// The item asks for something to wait for. As poll(2) and zmq_poll: a
// negative fd switches it off.
bool waits_for_something(const zmq_pollitem_t& item) noexcept
{
    return asked_events(item) != 0 && (item.socket != nullptr || item.fd >= 0);
}

// Registers the fiber's interest in one item. True for a plain socket.
bool add_item(detail::reactor& r, detail::interest& watching, const zmq_pollitem_t& item)
{
    if (!waits_for_something(item))
        return false;
    const short events = asked_events(item);
    if (item.socket == nullptr) {
        watching.add_fd(item.fd, events);
        return false;
    }
    if (auto* core = r.find_socket(item.socket)) {
        watching.add_socket(*core, events);
        return false;
    }
    // Not a green socket of this thread: wait for its fd's edge.
    zmq::fd_t fd = -1;
    size_t size = sizeof fd;
    if (zmq_getsockopt(item.socket, ZMQ_FD, &fd, &size) != 0)
        throw zmq::error_t();
    watching.add_fd(fd, ZMQ_POLLIN);
    return true;
}

} // namespace

// A green socket of another thread must not be polled here: that would
// consume the signals its own fibers wait for.
void check_items(detail::reactor& r, const zmq_pollitem_t* items, size_t nitems)
{
    for (size_t i = 0; i < nitems; ++i)
        if (items[i].socket != nullptr && r.find_socket(items[i].socket) == nullptr
            && detail::is_green_socket(items[i].socket))
            throw thread_error("zmq::green::poll: a green socket of another thread (a green "
                               "socket belongs to the thread that created it)");
}

int poll(zmq_pollitem_t* items, size_t nitems, std::chrono::milliseconds timeout)
{
    const auto deadline = detail::wait_deadline(timeout, "poll");
    if (items == nullptr && nitems != 0)
        throw zmq::error_t(EFAULT); // as zmq_poll
    // Without a timeout, nothing could ever end the wait (zmq_poller_wait_all
    // says EFAULT with no items too).
    if (timeout.count() < 0 && std::none_of(items, items + nitems, waits_for_something))
        throw zmq::error_t(EFAULT);
    detail::reactor& r = *hub::current().reactor();
    check_items(r, items, nitems);
    int rc = poll_now(r, items, nitems);
    if (rc > 0 || timeout.count() == 0)
        return rc;
    for (;;) {
        detail::wake_reason why;
        {
            detail::park_slot slot;
            slot.deadline = deadline;
            detail::interest watching(r, slot, nitems);
            bool plain = false;
            for (size_t i = 0; i < nitems; ++i)
                plain |= add_item(r, watching, items[i]);
            // The hub does not see a plain socket's operations: another
            // fiber's can consume the edge this poll waits for.
            if (plain)
                slot.deadline = detail::recheck_deadline(deadline);
            why = r.park(slot);
        }
        detail::throw_if_interrupted(why);
        // The closed socket's handle is gone: do not hand it to zmq_poll.
        if (why == detail::wake_reason::closed)
            throw zmq::error_t(ENOTSOCK);
        rc = poll_now(r, items, nitems);
        // Whatever woke it (an event poll_now does not report, the plain
        // sockets' re-check), the loop ends at the deadline.
        if (rc > 0 || detail::passed(deadline))
            return rc;
    }
}

} // namespace zmq::green
