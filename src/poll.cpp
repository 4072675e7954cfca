#include <zmq/green/poll.hpp>

#include "poll_wait.hpp"
#include "socket_core.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

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

// Registers the fiber's interest in a socket (green or plain). True for a
// plain one.
bool add_socket(detail::reactor& r, detail::interest& watching, void* socket, short events)
{
    if (auto* core = r.find_socket(socket)) {
        watching.add_socket(*core, events);
        return false;
    }
    // Not a green socket of this thread: wait for its fd's edge.
    zmq::fd_t fd = -1;
    size_t size = sizeof fd;
    if (zmq_getsockopt(socket, ZMQ_FD, &fd, &size) != 0)
        throw zmq::error_t();
    watching.add_fd(fd, ZMQ_POLLIN);
    return true;
}

// Registers the fiber's interest in one item. True for a plain socket.
bool add_item(detail::reactor& r, detail::interest& watching, const zmq_pollitem_t& item)
{
    if (!waits_for_something(item))
        return false;
    if (item.socket == nullptr) {
        watching.add_fd(item.fd, asked_events(item));
        return false;
    }
    return add_socket(r, watching, item.socket, asked_events(item));
}

// The green sockets among the items, to tell after a wait whether another
// fiber closed one meanwhile: zmq_poll must not get its handle then.
std::vector<void*> green_sockets(detail::reactor& r, const zmq_pollitem_t* items, size_t nitems)
{
    std::vector<void*> green;
    for (size_t i = 0; i < nitems; ++i)
        if (items[i].socket != nullptr && r.find_socket(items[i].socket) != nullptr)
            green.push_back(items[i].socket);
    return green;
}

void check_still_open(detail::reactor& r, const std::vector<void*>& green)
{
    for (void* socket : green)
        if (r.find_socket(socket) == nullptr)
            throw zmq::error_t(ENOTSOCK);
}

// Parks until an item may be ready, a socket of `changes` gets a signal, or
// the deadline. blind: re-read every blind_recheck all the same. Throws what
// interrupted the wait, and ENOTSOCK if one of the green sockets was closed
// (its handle is gone: it must not reach zmq_poll), also after the wake.
void park_on(detail::reactor& r, const zmq_pollitem_t* items, size_t nitems,
             const std::vector<void*>& changes, detail::clock::time_point deadline, bool blind,
             const std::vector<void*>& green)
{
    detail::wake_reason why;
    {
        detail::park_slot slot;
        slot.deadline = deadline;
        detail::interest watching(r, slot, nitems + changes.size());
        bool plain = false;
        for (size_t i = 0; i < nitems; ++i)
            plain |= add_item(r, watching, items[i]);
        for (void* socket : changes)
            plain |= add_socket(r, watching, socket, detail::any_change);
        // The hub does not see a plain socket's operations: another fiber's
        // can consume the edge this wait waits for.
        if (plain || blind)
            slot.deadline = detail::recheck_deadline(deadline);
        why = r.park(slot);
    }
    detail::throw_if_interrupted(why);
    if (why == detail::wake_reason::closed)
        throw zmq::error_t(ENOTSOCK);
    check_still_open(r, green);
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
    const std::vector<void*> green = green_sockets(r, items, nitems);
    for (;;) {
        park_on(r, items, nitems, {}, deadline, false, green);
        rc = poll_now(r, items, nitems);
        // Whatever woke it (an event poll_now does not report, the plain
        // sockets' re-check), the loop ends at the deadline.
        if (rc > 0 || detail::passed(deadline))
            return rc;
    }
}

namespace detail {

int poll_or_retry(zmq_pollitem_t* items, size_t nitems, const std::vector<void*>& changes,
                  const std::function<bool()>& retry)
{
    reactor& r = *hub::current().reactor();
    check_items(r, items, nitems);
    const std::vector<void*> green = green_sockets(r, items, nitems);
    // A socket that is also an item (a ROUTER both source and destination):
    // the retry's send may process one of its commands, room to receive, and
    // take the signal that would have announced it.
    const bool shared = std::any_of(changes.begin(), changes.end(), [&](void* socket) {
        return std::any_of(items, items + nitems,
                           [socket](const zmq_pollitem_t& item) { return item.socket == socket; });
    });
    for (;;) {
        // Their pending commands first, unthrottled (a send processes them at
        // most once a millisecond): one may make room, and its edge may have
        // come while nothing waited. Commands after these bring new edges.
        for (void* socket : changes)
            if (socket_core* core = r.find_socket(socket))
                if (const int error = core->refresh().error)
                    throw zmq::error_t(error);
        int rc = poll_now(r, items, nitems);
        if (rc > 0)
            return rc;
        if (retry())
            return 0;
        if (shared) {
            check_still_open(r, green); // the retry may have yielded
            rc = poll_now(r, items, nitems);
            if (rc > 0)
                return rc;
        }
        // Blind: a level read after the retry (the second look above;
        // another fiber's operation or io_loop handler on the same socket; a
        // yield of the retry's send to the fiber that owns the direction)
        // may take the command that made room, and with it the edge, as for
        // a blocking send (perform).
        park_on(r, items, nitems, changes, no_deadline, true, green);
    }
}

} // namespace detail

} // namespace zmq::green
