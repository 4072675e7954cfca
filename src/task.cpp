#include <zmq/green/stack_pool.hpp>
#include <zmq/green/task.hpp>

#include "reactor.hpp"

#include <boost/context/stack_traits.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <stdexcept>

namespace zmq::green {

namespace detail {

struct task_state {
    wait_queue ended{"task"}; // joiners
    fiber_state* fiber = nullptr; // while it runs
    bool kill_before_start = false;
    bool done = false;
    bool killed = false;
    std::exception_ptr error;
};

struct pool_state {
    explicit pool_state(std::size_t n) : size(n) {}
    std::size_t size;
    std::size_t running = 0;
    wait_queue room{"pool"}; // spawners waiting for a free slot
    std::vector<task> tasks; // started ones; finished ones are pruned lazily
};

std::shared_ptr<task_state> new_task_state() { return std::make_shared<task_state>(); }

void run_task(const std::shared_ptr<task_state>& s, const std::function<void()>& fn) noexcept
{
    reactor& r = *hub::current().reactor();
    fiber_state& state = r.attach_fiber_state();
    state.kill_pending = s->kill_before_start;
    s->fiber = &state;
    try {
        fn();
    } catch (const fiber_cancelled&) {
        s->killed = true;
    } catch (...) {
        s->error = std::current_exception();
        try {
            throw;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "zmq::green: task ended with an exception: %s\n", e.what());
        } catch (...) {
            std::fprintf(stderr, "zmq::green: task ended with an exception\n");
        }
    }
    s->fiber = nullptr;
    r.detach_fiber_state(state);
    s->done = true;
    s->ended.notify_all();
}

} // namespace detail

task spawn(std::function<void()> fn)
{
    // Boost's default size, pooled per thread: spawning ten thousand tasks
    // costs the pages they touch, and their stacks are reused.
    thread_local stack_pool stacks(boost::context::stack_traits::default_size());
    return spawn(std::allocator_arg, stacks, std::move(fn));
}

const detail::task_state& task::state(const char* what) const
{
    if (!s_)
        throw std::logic_error(std::string("zmq::green::task::") + what + ": empty task");
    s_->ended.check_thread(what);
    return *s_;
}

bool task::ready() const noexcept { return s_ && s_->done; }
bool task::killed() const noexcept { return s_ && s_->killed; }
std::exception_ptr task::exception() const noexcept { return s_ ? s_->error : nullptr; }

bool task::is_calling_fiber() const noexcept
{
    return s_->fiber != nullptr && s_->fiber == detail::reactor::current()->find_fiber_state();
}

bool task::join(std::chrono::milliseconds timeout) const
{
    state("join");
    return join_until(detail::wait_deadline(timeout, "task::join"));
}

bool task::join_until(std::chrono::steady_clock::time_point deadline) const
{
    state("join");
    if (is_calling_fiber())
        throw std::logic_error("zmq::green::task::join: a task cannot join itself");
    while (!s_->done)
        if (!s_->ended.wait(deadline))
            return s_->done;
    return true;
}

void task::kill(bool block) const
{
    state("kill");
    if (s_->done)
        return;
    auto& r = *detail::reactor::current();
    if (s_->fiber == nullptr)
        s_->kill_before_start = true;
    else
        r.kill(*s_->fiber);
    if (block && !is_calling_fiber())
        join();
}

bool joinall(const std::vector<task>& tasks, std::chrono::milliseconds timeout)
{
    const auto deadline = detail::wait_deadline(timeout, "joinall");
    return std::all_of(tasks.begin(), tasks.end(),
                       [&](const task& t) { return t.join_until(deadline); });
}

void killall(const std::vector<task>& tasks, bool block)
{
    // Killed first, the caller would meet its kill in its waits for the
    // others, and could not join itself.
    const task* self = nullptr;
    for (const task& t : tasks) {
        if (t.is_calling_fiber())
            self = &t;
        else
            t.kill(false);
    }
    if (block)
        for (const task& t : tasks)
            if (&t != self)
                t.join();
    if (self != nullptr)
        self->kill(false);
}

pool::pool(std::size_t size)
{
    if (size == 0)
        throw std::invalid_argument("zmq::green::pool: size must be at least 1");
    s_ = std::make_shared<detail::pool_state>(size);
}

task pool::spawn(std::function<void()> fn)
{
    return start(std::move(fn), [](std::function<void()> body) { return green::spawn(std::move(body)); });
}

task pool::start(std::function<void()> fn,
                 const std::function<task(std::function<void()>)>& launch)
{
    if (!fn)
        throw std::invalid_argument("zmq::green::pool::spawn: empty function");
    const std::shared_ptr<detail::pool_state> s = s_; // see wait_available
    wait_available();
    // Counted now, not when the fiber first runs: spawning again before it
    // runs must see the pool fuller.
    ++s->running;
    task t;
    try {
        t = launch([s, fn = std::move(fn)] {
            struct leave {
                detail::pool_state& s;
                ~leave()
                {
                    --s.running;
                    s.room.notify_all();
                }
            } on_exit{*s};
            fn();
        });
    } catch (...) {
        --s->running;
        throw;
    }
    auto& tasks = s->tasks;
    tasks.erase(std::remove_if(tasks.begin(), tasks.end(), [](const task& x) { return x.ready(); }),
                tasks.end());
    tasks.push_back(t);
    return t;
}

// The waits below hold the pool's state, which its tasks share: the pool
// itself may be destroyed while a fiber waits in them.
bool pool::wait_available(std::chrono::milliseconds timeout)
{
    const std::shared_ptr<detail::pool_state> s = s_;
    s->room.check_thread("pool::wait_available");
    const auto deadline = detail::wait_deadline(timeout, "pool::wait_available");
    while (s->running >= s->size)
        if (!s->room.wait(deadline))
            return s->running < s->size;
    return true;
}

bool pool::join(std::chrono::milliseconds timeout)
{
    const std::shared_ptr<detail::pool_state> s = s_;
    s->room.check_thread("pool::join");
    const auto deadline = detail::wait_deadline(timeout, "pool::join");
    for (const task& t : s->tasks)
        if (t.is_calling_fiber())
            throw std::logic_error("zmq::green::pool::join: called from one of the pool's own "
                                   "tasks, which would wait for itself");
    while (s->running > 0)
        if (!s->room.wait(deadline))
            return s->running == 0;
    return true;
}

void pool::kill(bool block)
{
    const std::shared_ptr<detail::pool_state> s = s_; // see wait_available
    // As the pool's other calls, even when it has no task to refuse.
    s->room.check_thread("pool::kill");
    // As gevent's Group.kill, again while tasks run: a fiber parked in
    // spawn() starts one as each killed task ends. Each pass works on a copy,
    // since starting a task changes the pool's list. Called from one of the
    // pool's tasks, it marks that one last, so that the kill does not land
    // in its own waits for the others: its next wait raises it.
    std::optional<task> self;
    for (;;) {
        std::vector<task> others;
        for (const task& t : s->tasks) {
            if (t.is_calling_fiber())
                self = t;
            else if (!t.ready())
                others.push_back(t);
        }
        if (others.empty() || !block) {
            killall(others, false);
            break;
        }
        killall(others, true);
    }
    if (self)
        self->kill(false);
}

std::size_t pool::running() const noexcept { return s_->running; }
std::size_t pool::free_count() const noexcept
{
    return s_->size > s_->running ? s_->size - s_->running : 0;
}

} // namespace zmq::green
