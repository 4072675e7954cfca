// Fibers that can be killed, joined with a timeout and bounded by a pool:
// the parts of gevent's Greenlet and Pool that Boost.Fiber does not have.
#pragma once

#include <boost/fiber/fiber.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

namespace zmq::green {

namespace detail {
struct task_state;
struct pool_state;
std::shared_ptr<task_state> new_task_state();
// The body of every task's fiber: runs fn and records how it ended.
void run_task(const std::shared_ptr<task_state>& state, const std::function<void()>& fn) noexcept;
} // namespace detail

// Raised inside a killed fiber by its next green wait (gevent's
// GreenletExit). Deliberately not a std::exception, so that a
// catch (const std::exception&) in the fiber does not swallow the kill.
// A task that lets it escape counts as killed, not failed.
class fiber_cancelled {
public:
    const char* what() const noexcept { return "zmq::green: fiber killed"; }
};

// A handle to a fiber started by spawn(). Copies name the same fiber. The
// fiber runs on even if every handle is gone, like a greenlet.
class task {
public:
    task() noexcept = default;

    bool valid() const noexcept { return s_ != nullptr; }
    // The fiber has ended.
    bool ready() const noexcept;
    // It ended by a kill (fiber_cancelled escaped it).
    bool killed() const noexcept;
    // What escaped the fiber's function, if anything but fiber_cancelled.
    std::exception_ptr exception() const noexcept;

    // Parks until the fiber ends or the timeout passes (-1: never); false on
    // timeout. A green wait.
    bool join(std::chrono::milliseconds timeout = std::chrono::milliseconds{-1}) const;
    bool join_until(std::chrono::steady_clock::time_point deadline) const;
    // Raises fiber_cancelled in the fiber at its next green wait, at once if
    // it is parked in one; with block, then waits until it ends. Waits that
    // are not green (Boost.Fiber's channels, mutexes, futures) are not
    // interrupted. From inside the fiber itself, only marks it.
    void kill(bool block = true) const;

private:
    explicit task(std::shared_ptr<detail::task_state> s) noexcept : s_(std::move(s)) {}
    template<class StackAllocator>
    friend task spawn(std::allocator_arg_t, StackAllocator&& salloc, std::function<void()> fn);
    friend class pool;
    friend void killall(const std::vector<task>& tasks, bool block);
    const detail::task_state& state(const char* what) const;
    // It is the fiber making this call.
    bool is_calling_fiber() const noexcept;

    std::shared_ptr<detail::task_state> s_;
};

// Starts fn in a new fiber of this thread (gevent.spawn). An exception that
// escapes fn is kept for task::exception() and reported on stderr. Without
// a stack allocator, the stack comes from a stack_pool of this thread.
template<class StackAllocator>
task spawn(std::allocator_arg_t, StackAllocator&& salloc, std::function<void()> fn)
{
    if (!fn)
        throw std::invalid_argument("zmq::green::spawn: empty function");
    task t(detail::new_task_state());
    boost::fibers::fiber(std::allocator_arg, std::forward<StackAllocator>(salloc),
                         [s = t.s_, fn = std::move(fn)] { detail::run_task(s, fn); })
        .detach();
    return t;
}
task spawn(std::function<void()> fn);

// Waits until every task has ended or the timeout passes; false on timeout
// (gevent.joinall). A green wait.
bool joinall(const std::vector<task>& tasks,
             std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});
// Kills every task; with block, waits until all have ended (gevent.killall).
// A calling task in the list is marked last, as by its own kill(): its next
// green wait raises fiber_cancelled.
void killall(const std::vector<task>& tasks, bool block = true);

// At most size tasks at a time (gevent.pool.Pool): spawn parks while the
// pool is full. As with gevent, tasks that all spawn into their own full
// pool park until a fiber outside it kills one: the pool cannot tell that
// nobody will.
class pool {
public:
    explicit pool(std::size_t size); // std::invalid_argument for 0
    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;

    task spawn(std::function<void()> fn);
    template<class StackAllocator>
    task spawn(std::allocator_arg_t, StackAllocator&& salloc, std::function<void()> fn)
    {
        return start(std::move(fn), [&](std::function<void()> body) {
            return green::spawn(std::allocator_arg, std::forward<StackAllocator>(salloc),
                                std::move(body));
        });
    }

    // Parks until a task may start, or the timeout passes; false on timeout.
    bool wait_available(std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});
    // Parks until every task has ended, or the timeout passes.
    bool join(std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});
    void kill(bool block = true);

    std::size_t running() const noexcept; // gevent's len(pool)
    std::size_t free_count() const noexcept;
    bool full() const noexcept { return free_count() == 0; }

private:
    // Waits for room, then starts fn through launch, counted by the pool.
    task start(std::function<void()> fn,
               const std::function<task(std::function<void()>)>& launch);

    std::shared_ptr<detail::pool_state> s_;
};

} // namespace zmq::green
