// Green poll and poller_t: cppzmq's polling shapes, parking the fiber.
#pragma once

#include <zmq/green/socket.hpp>

#include <zmq.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <vector>

namespace zmq::green {

// As zmq::poll: items hold sockets (green or not) or raw fds; results are
// level-triggered, read from ZMQ_EVENTS. A zero timeout never yields;
// -1 waits forever, below -1 is std::invalid_argument, and no item that
// asks for an event (none, or all with no events or a negative fd) with no
// timeout is zmq::error_t(EFAULT), as are null items. A green socket of
// another thread is thread_error. Returns the number of items with events.
int poll(zmq_pollitem_t* items, size_t nitems,
         std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});

inline int poll(std::vector<zmq_pollitem_t>& items,
                std::chrono::milliseconds timeout = std::chrono::milliseconds{-1})
{
    return poll(items.data(), items.size(), timeout);
}

template<std::size_t N>
int poll(std::array<zmq_pollitem_t, N>& items,
         std::chrono::milliseconds timeout = std::chrono::milliseconds{-1})
{
    return poll(items.data(), items.size(), timeout);
}

inline int poll(zmq_pollitem_t* items, size_t nitems, long timeout_ms)
{
    return poll(items, nitems, std::chrono::milliseconds{timeout_ms});
}

inline int poll(std::vector<zmq_pollitem_t>& items, long timeout_ms)
{
    return poll(items.data(), items.size(), std::chrono::milliseconds{timeout_ms});
}

enum class event_flags : short {
    none = 0,
    pollin = ZMQ_POLLIN,
    pollout = ZMQ_POLLOUT,
    pollerr = ZMQ_POLLERR,
    pollpri = ZMQ_POLLPRI
};

constexpr event_flags operator|(event_flags a, event_flags b) noexcept
{
    return zmq::detail::enum_bit_or(a, b);
}
constexpr event_flags operator&(event_flags a, event_flags b) noexcept
{
    return zmq::detail::enum_bit_and(a, b);
}
constexpr event_flags operator^(event_flags a, event_flags b) noexcept
{
    return zmq::detail::enum_bit_xor(a, b);
}
constexpr event_flags operator~(event_flags a) noexcept
{
    return zmq::detail::enum_bit_not(a);
}

namespace detail {
// -1 is forever; other negative timeouts are std::invalid_argument naming
// the call `what`; a timeout past the clock's range saturates.
std::chrono::steady_clock::time_point wait_deadline(std::chrono::milliseconds timeout,
                                                    const char* what);
} // namespace detail

struct no_user_data;

// The draft cppzmq poller_event, with a green socket reference.
template<class T = no_user_data>
struct poller_event {
    socket_ref socket;
    zmq::fd_t fd = -1;
    T* user_data = nullptr;
    event_flags events = event_flags::none;
};

// cppzmq's draft poller_t (libzmq here has no zmq_poller), built on green poll.
template<class T = no_user_data>
class poller_t {
public:
    using event_type = poller_event<T>;

    template<class U = T, class = std::enable_if_t<!std::is_same_v<U, no_user_data>>>
    void add(socket_ref socket, event_flags events, T* user_data)
    {
        add_item(true, socket, -1, events, user_data);
    }
    void add(socket_ref socket, event_flags events) { add_item(true, socket, -1, events, nullptr); }

    template<class U = T, class = std::enable_if_t<!std::is_same_v<U, no_user_data>>>
    void add(zmq::fd_t fd, event_flags events, T* user_data)
    {
        add_item(false, {}, fd, events, user_data);
    }
    void add(zmq::fd_t fd, event_flags events) { add_item(false, {}, fd, events, nullptr); }

    void modify(socket_ref socket, event_flags events)
    {
        find(true, socket, -1).events = static_cast<short>(events);
    }
    void modify(zmq::fd_t fd, event_flags events)
    {
        find(false, {}, fd).events = static_cast<short>(events);
    }

    void remove(socket_ref socket) { erase(find(true, socket, -1)); }
    void remove(zmq::fd_t fd) { erase(find(false, {}, fd)); }

    // Fills events with the ready entries; returns how many (0 on timeout).
    // Other fibers may add, modify and remove entries while one waits here:
    // it waits on a copy, reports none that was removed meanwhile, and sees
    // the changes when it next looks (pyzmq's green Poller does the same).
    size_t wait_all(std::vector<event_type>& events, std::chrono::milliseconds timeout)
    {
        // No room for a result: cppzmq's passes libzmq an empty vector's null
        // data, which is EFAULT there too.
        if (events.empty())
            throw zmq::error_t(EFAULT);
        const auto deadline = detail::wait_deadline(timeout, "poller_t::wait_all");
        for (auto left = timeout;;) {
            std::vector<zmq_pollitem_t> items(items_);
            const unsigned long changes = changes_;
            // Nothing to wait for (no entries, or none with events) and no
            // timeout is EFAULT, as zmq_poller_wait_all says with no entries.
            if (poll(items.data(), items.size(), left) <= 0)
                return 0;
            size_t n = 0;
            for (size_t k = 0; k < items.size(); ++k) {
                const zmq_pollitem_t& item = items[k];
                if (item.revents == 0)
                    continue;
                const size_t i = changes == changes_ ? k : index_of(item);
                if (i == items_.size())
                    continue;
                const auto ready = static_cast<short>(item.revents
                                                      & (items_[i].events | ZMQ_POLLERR));
                if (ready != 0 && n < events.size())
                    events[n++] = event_type{entries_[i].socket, item.socket ? -1 : item.fd,
                                             entries_[i].user_data,
                                             static_cast<event_flags>(ready)};
            }
            if (n > 0 || timeout.count() == 0)
                return n;
            if (timeout.count() > 0) {
                left = std::chrono::ceil<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now());
                if (left.count() <= 0)
                    return 0;
            }
        }
    }

    size_t size() const noexcept { return items_.size(); }

private:
    struct entry {
        socket_ref socket;
        T* user_data;
    };

    void add_item(bool is_socket, socket_ref socket, zmq::fd_t fd, event_flags events,
                  T* user_data)
    {
        if (is_socket ? !socket : fd < 0)
            throw zmq::error_t(is_socket ? ENOTSOCK : EBADF);
        for (size_t i = 0; i < items_.size(); ++i)
            if (matches(i, is_socket, socket, fd))
                throw zmq::error_t(EINVAL); // already added, as zmq_poller_add
        items_.push_back({is_socket ? socket.handle() : nullptr, is_socket ? 0 : fd,
                          static_cast<short>(events), 0});
        entries_.push_back({socket, user_data});
        ++changes_;
    }

    bool matches(size_t i, bool is_socket, socket_ref socket, zmq::fd_t fd) const noexcept
    {
        return is_socket ? entries_[i].socket == socket
                         : (!items_[i].socket && items_[i].fd == fd);
    }

    // The entry an item of a copy stands for, or size() if it was removed.
    size_t index_of(const zmq_pollitem_t& item) const noexcept
    {
        size_t i = 0;
        while (i < items_.size()
               && (item.socket ? items_[i].socket != item.socket
                               : (items_[i].socket || items_[i].fd != item.fd)))
            ++i;
        return i;
    }

    zmq_pollitem_t& find(bool is_socket, socket_ref socket, zmq::fd_t fd)
    {
        for (size_t i = 0; i < items_.size(); ++i)
            if (matches(i, is_socket, socket, fd))
                return items_[i];
        throw zmq::error_t(EINVAL); // not added, as zmq_poller_modify/remove
    }

    void erase(zmq_pollitem_t& item)
    {
        const auto i = static_cast<size_t>(&item - items_.data());
        items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(i));
        entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));
        ++changes_;
    }

    std::vector<zmq_pollitem_t> items_;
    std::vector<entry> entries_;
    unsigned long changes_ = 0; // adds and removes: a waiter's copy still lines up if unchanged
};

} // namespace zmq::green
