// What a green context shares with its sockets, on any thread.
#pragma once

#include <boost/fiber/condition_variable.hpp>
#include <boost/fiber/mutex.hpp>

#include <atomic>

namespace zmq::green::detail {

struct context_core {
    explicit context_core(void* h) noexcept : handle(h) {}

    void socket_opened() noexcept { open_sockets.fetch_add(1); }
    void socket_closed() noexcept
    {
        // Only a closing context has a fiber waiting for the count to drop.
        if (open_sockets.fetch_sub(1) == 1 && closing.load()) {
            std::lock_guard<boost::fibers::mutex> lock(mutex);
            all_closed.notify_all();
        }
    }

    void* handle;
    std::atomic<int> open_sockets{0};
    std::atomic<bool> closing{false};
    boost::fibers::mutex mutex;
    boost::fibers::condition_variable all_closed;
};

} // namespace zmq::green::detail
