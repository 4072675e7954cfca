#include <zmq/green/poll.hpp>

#include "socket_core.hpp"

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

// The fiber's interest in every item, for one park.
class registration {
public:
    registration(detail::reactor& r, size_t nitems) : reactor_(r)
    {
        // Nodes are linked into intrusive lists: they must never move.
        socket_nodes_.reserve(nitems);
        fd_nodes_.reserve(nitems);
    }
    ~registration()
    {
        socket_nodes_.clear();
        if (counted_)
            reactor_.socket_wait_ended();
        for (auto& w : fd_nodes_) {
            w.node.unlink();
            reactor_.unwatch_fd(*w.watch);
        }
    }
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;

    void add(detail::park_slot& slot, const zmq_pollitem_t& item)
    {
        const auto events =
            static_cast<short>(item.events & (ZMQ_POLLIN | ZMQ_POLLOUT | ZMQ_POLLERR | ZMQ_POLLPRI));
        if (events == 0)
            return;
        if (item.socket == nullptr)
            return add_fd(slot, item.fd, events);
        if (auto* core = reactor_.find_socket(item.socket)) {
            socket_nodes_.emplace_back(slot, events);
            core->waiters.push_back(socket_nodes_.back());
            if (!counted_)
                reactor_.socket_wait_started();
            counted_ = true;
            return;
        }
        // Not a green socket of this thread: wait for its fd's edge.
        zmq::fd_t fd = -1;
        size_t size = sizeof fd;
        if (zmq_getsockopt(item.socket, ZMQ_FD, &fd, &size) != 0)
            throw zmq::error_t();
        add_fd(slot, fd, ZMQ_POLLIN);
    }

private:
    struct fd_wait {
        detail::wait_node node;
        detail::fd_watch* watch;
    };

    void add_fd(detail::park_slot& slot, zmq::fd_t fd, short events)
    {
        fd_nodes_.push_back({detail::wait_node(slot, events), nullptr});
        try {
            fd_nodes_.back().watch = &reactor_.watch_fd(fd, fd_nodes_.back().node);
        } catch (...) {
            fd_nodes_.pop_back();
            throw;
        }
    }

    detail::reactor& reactor_;
    std::vector<detail::wait_node> socket_nodes_;
    std::vector<fd_wait> fd_nodes_;
    bool counted_ = false;
};

} // namespace

int poll(zmq_pollitem_t* items, size_t nitems, std::chrono::milliseconds timeout)
{
    detail::reactor& r = *hub::current().reactor();
    int rc = poll_now(r, items, nitems);
    if (rc > 0 || timeout.count() == 0)
        return rc;
    const auto deadline = detail::deadline_after(timeout);
    for (;;) {
        detail::wake_reason why;
        {
            detail::park_slot slot;
            slot.deadline = deadline;
            registration interest(r, nitems);
            for (size_t i = 0; i < nitems; ++i)
                interest.add(slot, items[i]);
            why = r.park(slot);
        }
        // The closed socket's handle is gone: do not hand it to zmq_poll.
        if (why == detail::wake_reason::closed)
            throw zmq::error_t(ENOTSOCK);
        rc = poll_now(r, items, nitems);
        if (rc > 0 || why == detail::wake_reason::timeout)
            return rc;
    }
}

} // namespace zmq::green
