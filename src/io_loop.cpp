#include <zmq/green/io_loop.hpp>
#include <zmq/green/task.hpp>
#include <zmq/green/timeout.hpp>

#include "loop_access.hpp"
#include "relaxed_count.hpp"
#include "socket_core.hpp"

#include <boost/fiber/fiber.hpp>
#include <boost/fiber/operations.hpp>

#include <sys/eventfd.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zmq::green {

namespace detail {

namespace {

// ms as the clock's ticks, the longest for what does not fit: a timeout of
// milliseconds::max() must mean "very long", not overflow into the past.
clock::duration clock_ticks(std::chrono::milliseconds ms) noexcept
{
    constexpr auto most = std::chrono::duration_cast<std::chrono::milliseconds>(
        clock::duration::max());
    if (ms >= most)
        return clock::duration::max();
    if (ms <= -most)
        return -clock::duration::max();
    return ms;
}

// now + d, saturated at the ends of the clock.
clock::time_point later_by(clock::duration d) noexcept
{
    const auto now = clock::now();
    const auto since = now.time_since_epoch(); // >= 0 for steady_clock
    if (d > clock::duration::max() - since)
        return clock::time_point::max();
    if (d < clock::duration::min() + since)
        return clock::time_point::min();
    return now + d;
}

} // namespace

struct loop_state;

struct loop_timer {
    const loop_state* loop = nullptr; // keys are unique within one loop only
    std::pair<clock::time_point, std::uint64_t> key;
    io_loop::callback fn;
    bool cancelled = false;
};

// A handler watches its socket or fd: the loop reads the level only when the
// state may have changed (or was ready last time), so an iteration costs what
// is ready, not what is registered.
struct loop_handler final : change_watch, std::enable_shared_from_this<loop_handler> {
    void changed(bool lost_edge) noexcept override;

    // An fd handler hears of the edges it polls for, errors always included.
    void set_fd_events(short e) noexcept
    {
        events = static_cast<short>(e | ZMQ_POLLERR);
        mask = events;
    }

    loop_state* loop = nullptr;
    socket_core* core = nullptr; // retained while registered
    int fd = -1;
    fd_watch* registration = nullptr; // an fd handler's, in the hub's epoll set
    io_loop::handler fn;
    short events = 0;
    bool active = true;
    bool lost_edge = false; // due because the fallback re-check found a signal
    // Events its owner's own calls just found ready (loop_access::presume_ready):
    // the next dispatch calls the handler without reading the level.
    short presumed = 0;
    // Linked while queued for the loop's next level check.
    boost::intrusive::list_member_hook<auto_unlink> due_hook;
    // Linked while its owner's send was refused though the level said
    // POLLOUT (loop_access::send_refused). The level is about any peer
    // (ROUTER_MANDATORY, XPUB_NODROP): believed at once, it would call the
    // handler on every iteration, and the loop would never park. As in
    // poll_or_retry, only a signal since the refusal (an edge, or one the
    // fallback re-check found) makes POLLOUT worth a retry; and so does
    // every blind_recheck, as anyone else's level read may have taken it.
    boost::intrusive::list_member_hook<auto_unlink> refused_hook;
    std::uint64_t edges_at_refusal = 0;
    clock::time_point refusal_recheck{};
};

using due_list = boost::intrusive::list<
    loop_handler,
    boost::intrusive::member_hook<loop_handler, boost::intrusive::list_member_hook<auto_unlink>,
                                  &loop_handler::due_hook>,
    boost::intrusive::constant_time_size<false>>;

using refused_list = boost::intrusive::list<
    loop_handler,
    boost::intrusive::member_hook<loop_handler, boost::intrusive::list_member_hook<auto_unlink>,
                                  &loop_handler::refused_hook>,
    boost::intrusive::constant_time_size<false>>;

struct loop_state {
    std::shared_ptr<reactor> owner;
    std::thread::id thread;
    int wakefd = -1;

    // Shared with other threads: callbacks, the stop request, whether the
    // loop sleeps (then they must write wakefd).
    std::mutex mutex;
    std::vector<io_loop::callback> callbacks;
    // Written under the mutex; read without it where a stale answer only
    // costs one more message (a stream's burst).
    std::atomic<bool> stop_requested{false};
    bool sleeping = false;

    std::unordered_map<socket_core*, std::shared_ptr<loop_handler>> socket_handlers;
    std::unordered_map<int, std::shared_ptr<loop_handler>> fd_handlers;
    due_list due_checks; // handlers whose level the next dispatch reads
    refused_list refused; // handlers whose POLLOUT waits for a signal
    std::map<std::pair<clock::time_point, std::uint64_t>, std::shared_ptr<loop_timer>> timers;
    std::uint64_t timer_seq = 0;
    io_loop::error_handler on_error;
    park_slot* parked = nullptr;
    bool running = false;
    bool closed = false;
    std::atomic<std::chrono::milliseconds> fallback{std::chrono::milliseconds{1000}};
    unsigned quiet_fallbacks = 0; // re-checks in a row that nothing else came between
    // io_loop_stats, which a monitoring thread may read.
    struct {
        relaxed_count iterations, parks, rescues, level_checks;
    } stats;

    // A kill of the loop's fiber, or the expiry of a scoped timeout around
    // start(), escaped a callback: like gevent's GreenletExit, it is not the
    // callback's error but the end of the run. start() throws it as soon as
    // the callback returns, and leaves what it had not run for the next run.
    std::exception_ptr exit;
    boost::fibers::fiber::id loop_fiber;           // while running
    clock::time_point run_deadline = no_deadline; // the scoped timeouts around start()

    // wakefd stays registered: a write from another thread wakes the parked
    // loop through it, and the loop reads it only after such a write.
    struct wake_watch final : change_watch {
        wake_watch() noexcept { mask = ZMQ_POLLIN | ZMQ_POLLERR; }
        void changed(bool) noexcept override
        {
            loop->wake_signalled = true;
            loop->wake_parked();
        }
        loop_state* loop = nullptr;
    } wake_watcher;
    fd_watch* wake_registration = nullptr;
    bool wake_signalled = false;

    ~loop_state()
    {
        for (auto& [core, h] : socket_handlers)
            drop(*h);
        for (auto& [fd, h] : fd_handlers)
            drop(*h);
        if (wake_registration != nullptr) {
            wake_watcher.unlink();
            owner->unwatch_fd(*wake_registration);
        }
        if (wakefd >= 0)
            ::close(wakefd);
    }

    // Destroys the queued callbacks and timeouts of a closed loop, outside
    // the mutex: what they capture may call the loop as it goes.
    void drop_pending() noexcept
    {
        auto pending_timers = std::move(timers);
        timers.clear();
        std::vector<io_loop::callback> pending;
        {
            std::lock_guard<std::mutex> lock(mutex);
            pending.swap(callbacks);
        }
    }

    void drop(loop_handler& h) noexcept
    {
        h.active = false;
        h.change_watch::unlink();
        h.due_hook.unlink();
        h.refused_hook.unlink();
        if (h.core != nullptr)
            std::exchange(h.core, nullptr)->release();
        if (h.registration != nullptr)
            owner->unwatch_fd(*std::exchange(h.registration, nullptr));
    }

    // Queues h for a level check, waking the loop if it sleeps.
    void mark_due(loop_handler& h) noexcept
    {
        if (!h.active || h.due_hook.is_linked())
            return;
        due_checks.push_back(h);
        wake_parked();
    }

    // Wakes the parked loop fiber; on the loop's own thread only.
    void wake_parked() noexcept
    {
        if (parked != nullptr)
            owner->wake(*parked, wake_reason::event);
    }

    void check_thread(const char* what) const
    {
        if (!owner->on_owner_thread())
            throw thread_error(std::string("zmq::green::io_loop::") + what
                               + ": called from a thread that does not own the loop");
    }

    // What start() refuses; run_sync checks it before queuing its function,
    // which must not run later if run_sync throws.
    void check_startable(const char* what) const
    {
        check_open(what);
        if (running)
            throw std::logic_error(std::string("zmq::green::io_loop::") + what
                                   + ": the loop is already running");
    }

    // What a closed loop refuses: work it would keep, and never run.
    void check_open(const char* what) const
    {
        if (closed)
            throw std::logic_error(std::string("zmq::green::io_loop::") + what
                                   + ": the loop is closed");
    }

    void check_stopped(const char* what) const
    {
        if (running)
            throw std::logic_error(std::string("zmq::green::io_loop::") + what
                                   + ": the loop is running; stop it and let start() return");
    }

    // Wakes the loop fiber if it waits. Any thread.
    void wake() noexcept
    {
        if (std::this_thread::get_id() == thread && reactor::current() == owner.get()) {
            wake_parked();
            return;
        }
        const std::uint64_t one = 1;
        [[maybe_unused]] auto rc = ::write(wakefd, &one, sizeof one);
    }

    std::shared_ptr<loop_handler> find(socket_core* core, int fd) const noexcept
    {
        if (core != nullptr) {
            const auto it = socket_handlers.find(core);
            return it != socket_handlers.end() ? it->second : nullptr;
        }
        const auto it = fd_handlers.find(fd);
        return it != fd_handlers.end() ? it->second : nullptr;
    }

    void remove(socket_core* core, int fd) noexcept
    {
        if (core != nullptr)
            erase(socket_handlers, core);
        else
            erase(fd_handlers, fd);
    }

    template<class Map, class Key>
    void erase(Map& handlers, const Key& key) noexcept
    {
        const auto it = handlers.find(key);
        if (it == handlers.end())
            return;
        drop(*it->second);
        handlers.erase(it);
    }

    bool ends_the_run(const std::exception_ptr& e) const noexcept
    {
        if (!running || boost::this_fiber::get_id() != loop_fiber)
            return false;
        try {
            std::rethrow_exception(e);
        } catch (const fiber_cancelled&) {
            return true;
        } catch (const timeout_error&) {
            return passed(run_deadline);
        } catch (...) {
            return false;
        }
    }

    // Records e as the run's exit if it is one (the first stands).
    bool took_exit(std::exception_ptr& e) noexcept
    {
        if (!ends_the_run(e))
            return false;
        if (!exit)
            exit = std::move(e);
        return true;
    }

    void report(std::exception_ptr e) noexcept
    {
        if (!e) {
            std::fprintf(stderr, "zmq::green::io_loop::handle_exception: no exception given and "
                                 "none being handled\n");
            return;
        }
        if (took_exit(e))
            return;
        try {
            if (on_error) {
                // A copy: the handler may replace itself while it runs.
                const io_loop::error_handler fn = on_error;
                fn(e);
                return;
            }
        } catch (...) {
            e = std::current_exception(); // a throwing error handler: report that instead
            if (took_exit(e)) // met in a wait of the handler's own
                return;
        }
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "zmq::green::io_loop: uncaught exception in callback: %s\n",
                         ex.what());
        } catch (...) {
            std::fprintf(stderr, "zmq::green::io_loop: uncaught exception in callback\n");
        }
    }

    // Returns false when the run must end (exit).
    template<class Fn>
    bool guarded(Fn&& fn) noexcept
    {
        try {
            fn();
        } catch (...) {
            report(std::current_exception());
        }
        return !exit;
    }

    void throw_exit()
    {
        if (exit)
            std::rethrow_exception(std::exchange(exit, nullptr));
    }

    void run_callbacks()
    {
        std::vector<io_loop::callback> batch;
        {
            std::lock_guard<std::mutex> lock(mutex);
            batch.swap(callbacks);
        }
        for (auto it = batch.begin(); it != batch.end(); ++it) {
            if (closed)
                return;
            if (!guarded(*it)) {
                // The rest run first in the next run, before what came since.
                std::lock_guard<std::mutex> lock(mutex);
                callbacks.insert(callbacks.begin(), std::make_move_iterator(it + 1),
                                 std::make_move_iterator(batch.end()));
                return;
            }
        }
    }

    // Taken before the iteration's callbacks run, as tornado does: a timeout
    // that a callback or timeout adds, even one already due, waits for the
    // next iteration.
    std::vector<std::shared_ptr<loop_timer>> due_timers()
    {
        std::vector<std::shared_ptr<loop_timer>> due;
        if (timers.empty())
            return due;
        const auto now = clock::now();
        while (!timers.empty() && timers.begin()->first.first <= now) {
            due.push_back(std::move(timers.begin()->second));
            timers.erase(timers.begin());
        }
        return due;
    }

    // call_at and call_later, named `what` in their errors.
    std::shared_ptr<loop_timer> add_timer(clock::time_point when, io_loop::callback fn,
                                          const char* what)
    {
        check_thread(what);
        check_open(what);
        if (!fn)
            throw std::invalid_argument(std::string("zmq::green::io_loop::") + what
                                        + ": empty function");
        auto t = std::make_shared<loop_timer>();
        t->loop = this;
        t->key = {when, timer_seq++};
        t->fn = std::move(fn);
        timers.emplace(t->key, t);
        // A parked loop must recompute its deadline.
        wake();
        return t;
    }

    // Due timers a run that ended did not reach: due again in the next run.
    template<class It>
    void requeue(It first, It last)
    {
        for (; first != last; ++first)
            if (!(*first)->cancelled)
                timers.emplace((*first)->key, *first);
    }

    void run_timers(const std::vector<std::shared_ptr<loop_timer>>& due)
    {
        for (auto it = due.begin(); it != due.end(); ++it) {
            const auto& t = *it;
            // An earlier timeout of this batch may have removed it.
            if (t->cancelled || closed)
                continue;
            t->cancelled = true;
            auto fn = std::move(t->fn);
            if (!guarded(fn)) {
                requeue(it + 1, due.end());
                return;
            }
        }
    }

    // Reads the level of the handlers that may have changed and calls the
    // ready ones once. Returns whether any was ready.
    bool dispatch(bool after_fallback)
    {
        if (after_fallback) {
            // Not every socket: only those whose fd holds a signal no edge
            // announced are marked, as lost edges.
            if (!socket_handlers.empty())
                owner->recheck_sockets();
            // Every fd: a poll() also finds those closed under their handler,
            // which epoll drops without a word.
            for (auto& [fd, h] : fd_handlers)
                if (!h->due_hook.is_linked())
                    h->changed(true);
        }
        for (loop_handler& h : refused)
            if (passed(h.refusal_recheck))
                mark_due(h);
        bool any = false;
        std::vector<std::shared_ptr<loop_handler>> due_fds;
        due_list batch;
        batch.splice(batch.end(), due_checks);
        while (!batch.empty()) {
            loop_handler& h = batch.front();
            batch.pop_front();
            // A callback may remove it, or any other.
            std::shared_ptr<loop_handler> keep = h.shared_from_this();
            if (!h.active)
                continue;
            if (h.core == nullptr) {
                due_fds.push_back(std::move(keep));
                continue;
            }
            const bool lost = std::exchange(h.lost_edge, false);
            bool rescued = lost;
            short ready = static_cast<short>(std::exchange(h.presumed, 0) & h.events);
            if (ready != 0)
                rescued = false; // its owner's calls found it ready, not the re-check
            bool gone = h.core->closed;
            if (!gone && ready == 0) {
                // The one EVENTS read; it also wakes fibers waiting on the socket.
                stats.level_checks.add();
                const refresh_result r = h.core->refresh(&h);
                gone = r.error != 0;
                ready = static_cast<short>(r.events & h.events);
                // A level without POLLOUT is to be trusted again: room brings it.
                if (!(r.events & ZMQ_POLLOUT))
                    h.refused_hook.unlink();
            }
            if ((ready & ZMQ_POLLOUT) && h.refused_hook.is_linked()) {
                if (h.core->edges != h.edges_at_refusal || lost
                    || passed(h.refusal_recheck))
                    h.refused_hook.unlink();
                else
                    ready = static_cast<short>(ready & ~ZMQ_POLLOUT);
            }
            if (gone) {
                remove_gone(h, ZMQ_POLLERR);
                any = true;
            } else if (ready != 0) {
                call(h, ready, rescued);
                any = true;
            }
            if (exit) {
                due_checks.splice(due_checks.begin(), batch);
                for (auto& fd_handler : due_fds)
                    mark_due(*fd_handler);
                return true;
            }
        }
        return dispatch_fds(due_fds) || any;
    }

    // One poll() for the due fd handlers.
    bool dispatch_fds(const std::vector<std::shared_ptr<loop_handler>>& due)
    {
        if (due.empty())
            return false;
        std::vector<pollfd> fds;
        fds.reserve(due.size());
        for (auto& h : due)
            fds.push_back({h->fd, to_poll_events(h->events), 0});
        int rc;
        do {
            rc = ::poll(fds.data(), fds.size(), 0);
        } while (rc < 0 && errno == EINTR);
        if (rc < 0) {
            // Out of memory: ask again after a yield rather than forget them.
            for (auto& h : due)
                mark_due(*h);
            return true;
        }
        stats.level_checks.add(due.size());
        // An fd the re-check presumed lost may have an edge epoll holds but
        // has not delivered: delivered now, it is not counted as a rescue.
        for (auto& h : due)
            if (h->lost_edge) {
                owner->deliver_pending();
                break;
            }
        bool any = false;
        for (std::size_t i = 0; rc > 0 && i < fds.size(); ++i) {
            loop_handler& h = *due[i];
            const bool rescued = std::exchange(h.lost_edge, false);
            if (fds[i].revents == 0 || !h.active)
                continue;
            short ready = 0;
            if (fds[i].revents & POLLIN)
                ready |= ZMQ_POLLIN;
            if (fds[i].revents & POLLOUT)
                ready |= ZMQ_POLLOUT;
            if (fds[i].revents & POLLPRI)
                ready |= ZMQ_POLLPRI;
            if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL))
                ready |= ZMQ_POLLERR;
            any = true;
            if (fds[i].revents & POLLNVAL)
                remove_gone(h, ready); // not an fd any more: it would be reported forever
            else
                call(h, ready, rescued);
            if (exit) {
                for (std::size_t rest = i + 1; rest < due.size(); ++rest)
                    mark_due(*due[rest]);
                return true;
            }
        }
        return any;
    }

    // Its socket or fd went away: the handler goes, then hears it once.
    void remove_gone(loop_handler& h, short ready)
    {
        auto fn = h.fn;
        remove(h.core, h.fd);
        guarded([&] { fn(ready); });
    }

    void call(loop_handler& h, short ready, bool rescued)
    {
        if (rescued)
            stats.rescues.add();
        guarded([&] { h.fn(ready); });
        // Level-triggered: still ready unless the next check says otherwise.
        mark_due(h);
    }

    // Parks the loop fiber until a handler's socket or fd signals, a callback
    // or stop arrives, or the next timeout. Returns true if the wait ended
    // by the fallback re-check.
    bool wait()
    {
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (!callbacks.empty() || stop_requested)
                return false;
            sleeping = true;
        }
        bool by_fallback = false;
        try {
            by_fallback = park();
        } catch (...) {
            awake();
            throw;
        }
        awake();
        quiet_fallbacks = by_fallback ? std::min(quiet_fallbacks + 1, max_quiet_rechecks) : 0;
        if (std::exchange(wake_signalled, false)) {
            std::uint64_t count;
            while (::read(wakefd, &count, sizeof count) > 0) {
            }
        }
        return by_fallback;
    }

    // Nothing to register: handlers and wakefd stay in the hub's epoll set,
    // and their edges mark them due and wake this slot.
    bool park()
    {
        if (!due_checks.empty())
            return false;
        park_slot slot;
        const clock::time_point timer_deadline =
            timers.empty() ? no_deadline : timers.begin()->first.first;
        slot.deadline = timer_deadline;
        clock::time_point fallback_deadline = no_deadline;
        const auto interval = fallback.load(std::memory_order_relaxed);
        if ((!socket_handlers.empty() || !fd_handlers.empty()) && interval.count() > 0) {
            const auto recheck = quiet_recheck_interval(interval, quiet_fallbacks);
            fallback_deadline = later_by(clock_ticks(recheck));
            slot.deadline = std::min(slot.deadline, fallback_deadline);
        }
        for (const loop_handler& h : refused)
            slot.deadline = std::min(slot.deadline, h.refusal_recheck);
        stats.parks.add();
        parked = &slot;
        const wake_reason why = owner->park(slot);
        parked = nullptr;
        throw_if_interrupted(why);
        if (why != wake_reason::timeout)
            return false;
        const auto now = clock::now();
        return now >= fallback_deadline && now < timer_deadline;
    }

    void awake() noexcept
    {
        std::lock_guard<std::mutex> lock(mutex);
        sleeping = false;
    }
};

void loop_handler::changed(bool lost) noexcept
{
    // An fd hears otherwise only from epoll: an edge, so not lost after all.
    // A socket handler already due will be checked anyway: the re-check (any
    // loop's, or the hub's) rescues nothing, though it finds the signal of
    // the edge that made it due still unread.
    lost_edge = core == nullptr ? lost : lost_edge || (lost && !due_hook.is_linked());
    loop->mark_due(*this);
}

void loop_access::presume_ready(io_loop& loop, socket_core& core, short events) noexcept
{
    if (auto h = loop.s_->find(&core, -1)) {
        h->presumed = static_cast<short>(h->presumed | events);
        loop.s_->mark_due(*h);
    }
}

void loop_access::send_refused(io_loop& loop, socket_core& core,
                               std::uint64_t edges_before) noexcept
{
    auto& s = *loop.s_;
    auto h = s.find(&core, -1);
    if (!h)
        return;
    h->edges_at_refusal = edges_before;
    h->refusal_recheck = later_by(blind_recheck);
    if (!h->refused_hook.is_linked())
        s.refused.push_back(*h);
}

void loop_access::send_taken(io_loop& loop, socket_core& core) noexcept
{
    if (auto h = loop.s_->find(&core, -1))
        h->refused_hook.unlink();
}

bool loop_access::stopping(const io_loop& loop) noexcept
{
    return loop.s_->stop_requested.load(std::memory_order_relaxed);
}

bool loop_access::ending_run(const io_loop& loop) noexcept { return loop.s_->exit != nullptr; }

void loop_access::check_thread(const io_loop& loop, const char* what)
{
    loop.s_->check_thread(what);
}

namespace {

thread_local std::unique_ptr<io_loop> default_loop;

// The loops running in this thread, in the order they started. Each runs in
// the fiber that called start(), and fibers need not stop them in reverse.
struct running_loop {
    io_loop* loop;
    boost::fibers::fiber::id fiber;
};
thread_local std::vector<running_loop> running_loops;

void forget_running(const io_loop* loop, boost::fibers::fiber::id fiber) noexcept
{
    auto& running = running_loops;
    const auto it = std::find_if(running.begin(), running.end(), [&](const running_loop& r) {
        return r.loop == loop && r.fiber == fiber;
    });
    if (it != running.end())
        running.erase(it);
}

short checked_events(short events, const char* what)
{
    if (events & ~(ZMQ_POLLIN | ZMQ_POLLOUT | ZMQ_POLLERR | ZMQ_POLLPRI))
        throw std::invalid_argument(std::string("zmq::green::io_loop::") + what
                                    + ": events must be ZMQ_POLLIN, ZMQ_POLLOUT, ZMQ_POLLERR");
    return events;
}

} // namespace

} // namespace detail

io_loop::io_loop() : s_(std::make_unique<detail::loop_state>())
{
    s_->owner = hub::current().reactor();
    s_->thread = std::this_thread::get_id();
    s_->wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s_->wakefd < 0)
        throw std::system_error(errno, std::generic_category(), "zmq::green::io_loop: eventfd");
    s_->wake_watcher.loop = s_.get();
    s_->wake_registration = &s_->owner->watch_fd(s_->wakefd, s_->wake_watcher);
}

// A running loop's start() is on some fiber's stack, about to read what
// goes here: that is a mistake to name, as destroying a joinable std::thread
// is. Thrown out of the destructor, it terminates with this message.
io_loop::~io_loop()
{
    s_->check_stopped("~io_loop");
    // What the pending callbacks capture may call the loop as it goes (a
    // stream removing its handler, a callback added): destroyed first, while
    // the loop is whole, and outside its mutex.
    {
        std::lock_guard<std::mutex> lock(s_->mutex);
        s_->closed = true; // callbacks added now are dropped
    }
    s_->drop_pending();
}

io_loop& io_loop::current()
{
    const auto& running = detail::running_loops;
    if (!running.empty()) {
        const auto self = boost::this_fiber::get_id();
        for (auto it = running.rbegin(); it != running.rend(); ++it)
            if (it->fiber == self)
                return *it->loop;
        return *running.back().loop;
    }
    if (!detail::default_loop)
        detail::default_loop = std::make_unique<io_loop>();
    return *detail::default_loop;
}

void io_loop::start()
{
    auto& s = *s_;
    s.check_thread("start");
    s.check_startable("start");
    s.running = true;
    s.loop_fiber = boost::this_fiber::get_id();
    const detail::fiber_state* scope = s.owner->find_fiber_state();
    s.run_deadline = scope != nullptr ? scope->deadline : detail::no_deadline;
    detail::running_loops.push_back({this, s.loop_fiber});
    struct restore {
        io_loop* loop;
        ~restore()
        {
            auto& s = *loop->s_;
            detail::forget_running(loop, s.loop_fiber);
            s.running = false;
            s.loop_fiber = {};
            // A stop() is consumed by the run it ended; one made while the
            // loop was not running ends the next run after one iteration.
            std::lock_guard<std::mutex> lock(s.mutex);
            s.stop_requested = false;
        }
    } on_exit{this};

    bool after_fallback = false;
    for (;;) {
        s.stats.iterations.add();
        const auto due = s.due_timers();
        s.run_callbacks();
        if (s.exit) {
            s.requeue(due.begin(), due.end());
            s.throw_exit();
        }
        s.run_timers(due);
        s.throw_exit();
        {
            // As tornado: what a handler's stop() leaves runs first, the
            // callbacks and timeouts it added.
            std::lock_guard<std::mutex> lock(s.mutex);
            if (s.stop_requested || s.closed)
                break;
        }
        const bool busy = s.dispatch(std::exchange(after_fallback, false));
        s.throw_exit();
        if (busy) {
            s.quiet_fallbacks = 0;
            // Level-triggered work remains: let the thread's other fibers in first.
            boost::this_fiber::yield();
            continue;
        }
        after_fallback = s.wait();
    }
}

void io_loop::stop() noexcept
{
    auto& s = *s_;
    bool sleeping;
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.stop_requested = true;
        sleeping = s.sleeping;
    }
    if (sleeping)
        s.wake();
}

bool io_loop::running() const noexcept { return s_->running; }
bool io_loop::closed() const noexcept { return s_->closed; }

void io_loop::close(bool all_fds)
{
    auto& s = *s_;
    s.check_thread("close");
    s.check_stopped("close");
    {
        std::lock_guard<std::mutex> lock(s.mutex); // add_callback reads it from any thread
        s.closed = true;
    }
    std::vector<std::shared_ptr<detail::loop_handler>> handlers;
    for (auto& [fd, h] : s.fd_handlers)
        handlers.push_back(std::move(h));
    s.fd_handlers.clear();
    for (auto& [core, h] : s.socket_handlers)
        handlers.push_back(std::move(h));
    s.socket_handlers.clear();
    for (auto& h : handlers) {
        if (all_fds && h->core != nullptr)
            h->core->close();
        s.drop(*h); // out of the epoll set before the fd closes
        if (all_fds && h->fd >= 0)
            ::close(h->fd);
    }
    s.drop_pending();
}

void io_loop::run_sync(std::function<void()> fn, std::chrono::milliseconds timeout)
{
    s_->check_thread("run_sync");
    detail::check_wait_timeout(timeout, "io_loop::run_sync");
    if (!fn)
        throw std::invalid_argument("zmq::green::io_loop::run_sync: empty function");
    s_->check_startable("run_sync");
    struct outcome {
        io_loop* loop = nullptr; // until run_sync returns
        boost::fibers::fiber::id fiber;
        bool done = false;
        std::exception_ptr error;
    };
    auto out = std::make_shared<outcome>();
    out->loop = this;
    bool timed_out = false;
    timeout_handle timer;
    add_callback([out, fn = std::move(fn)]() mutable {
        // A run that a kill or a scoped timeout ended before this callback
        // left it queued: run_sync has thrown, and fn must not run later.
        if (out->loop == nullptr)
            return;
        // Dispatched, so fn runs at once, as tornado calls it: one that
        // returns without waiting is done before a zero timeout or a stale
        // stop() can end the run. Its fiber's current() is this loop.
        boost::fibers::fiber(boost::fibers::launch::dispatch, [out, fn = std::move(fn)] {
            out->fiber = boost::this_fiber::get_id();
            detail::running_loops.push_back({out->loop, out->fiber});
            try {
                fn();
            } catch (...) {
                out->error = std::current_exception();
            }
            out->done = true;
            if (out->loop != nullptr) {
                detail::forget_running(out->loop, out->fiber);
                out->loop->stop();
            }
        }).detach();
    });
    if (timeout.count() >= 0)
        timer = call_later(detail::clock_ticks(timeout), [&] {
            timed_out = true;
            stop();
        });
    struct finish {
        outcome& out;
        io_loop& loop;
        timeout_handle& timer;
        ~finish()
        {
            // fn may run on: it no longer names this loop.
            if (!out.done && out.fiber != boost::fibers::fiber::id{})
                detail::forget_running(&loop, out.fiber);
            out.loop = nullptr;
            loop.remove_timeout(timer);
        }
    } on_exit{*out, *this, timer};
    start(); // a scoped timeout or a kill may end it with an exception
    if (!out->done) {
        if (timed_out)
            throw timeout_error("zmq::green::io_loop::run_sync: timed out after "
                                + std::to_string(timeout.count()) + " ms");
        throw std::runtime_error("zmq::green::io_loop::run_sync: the loop stopped before the "
                                 "function returned");
    }
    if (out->error)
        std::rethrow_exception(out->error);
}

void io_loop::add_handler(socket_ref socket, handler fn, short events)
{
    auto& s = *s_;
    s.check_thread("add_handler");
    s.check_open("add_handler");
    detail::checked_events(events, "add_handler");
    auto* core = socket.core();
    if (core == nullptr || core->closed)
        throw zmq::error_t(ENOTSOCK);
    if (&core->owner != s.owner.get())
        throw thread_error("zmq::green::io_loop::add_handler: the socket belongs to another thread");
    if (!fn)
        throw std::invalid_argument("zmq::green::io_loop::add_handler: empty handler");
    if (s.find(core, -1))
        throw std::invalid_argument("zmq::green::io_loop::add_handler: the socket already has a "
                                    "handler (use update_handler)");
    auto h = std::make_shared<detail::loop_handler>();
    h->loop = &s;
    h->fn = std::move(fn);
    h->events = events;
    s.socket_handlers.emplace(core, h);
    core->retain();
    h->core = core;
    core->watchers.push_back(*h);
    s.mark_due(*h); // what was ready before it came has no edge to come
}

void io_loop::add_handler(int fd, handler fn, short events)
{
    auto& s = *s_;
    s.check_thread("add_handler");
    s.check_open("add_handler");
    detail::checked_events(events, "add_handler");
    if (fd < 0)
        throw zmq::error_t(EBADF);
    if (!fn)
        throw std::invalid_argument("zmq::green::io_loop::add_handler: empty handler");
    if (s.find(nullptr, fd))
        throw std::invalid_argument("zmq::green::io_loop::add_handler: fd " + std::to_string(fd)
                                    + " already has a handler (use update_handler)");
    auto h = std::make_shared<detail::loop_handler>();
    h->loop = &s;
    h->fd = fd;
    h->fn = std::move(fn);
    h->set_fd_events(events);
    const auto it = s.fd_handlers.emplace(fd, h).first;
    try {
        h->registration = &s.owner->watch_fd(fd, *h);
    } catch (...) {
        s.fd_handlers.erase(it);
        throw;
    }
    s.mark_due(*h); // what was ready before it came has no edge to come
}

void io_loop::update_handler(socket_ref socket, short events)
{
    s_->check_thread("update_handler");
    detail::checked_events(events, "update_handler");
    auto h = s_->find(socket.core(), -1);
    if (socket.core() == nullptr || !h)
        throw std::invalid_argument("zmq::green::io_loop::update_handler: the socket has no handler");
    if (!(events & ZMQ_POLLOUT))
        h->refused_hook.unlink(); // no blind re-checks for a send nobody waits to make
    if (h->events != events) {
        h->events = events;
        s_->mark_due(*h);
    }
}

void io_loop::update_handler(int fd, short events)
{
    s_->check_thread("update_handler");
    detail::checked_events(events, "update_handler");
    auto h = s_->find(nullptr, fd);
    if (!h)
        throw std::invalid_argument("zmq::green::io_loop::update_handler: fd "
                                    + std::to_string(fd) + " has no handler");
    h->set_fd_events(events);
    s_->mark_due(*h);
}

void io_loop::remove_handler(socket_ref socket)
{
    s_->check_thread("remove_handler");
    if (socket.core() != nullptr)
        s_->remove(socket.core(), -1);
}

void io_loop::remove_handler(int fd)
{
    s_->check_thread("remove_handler");
    s_->remove(nullptr, fd);
}

void io_loop::add_callback(callback fn)
{
    if (!fn)
        throw std::invalid_argument("zmq::green::io_loop::add_callback: empty function");
    auto& s = *s_;
    bool sleeping;
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        if (s.closed)
            return; // as tornado: a closing loop ignores new callbacks
        s.callbacks.push_back(std::move(fn));
        sleeping = s.sleeping && s.callbacks.size() == 1;
    }
    if (sleeping)
        s.wake();
}

timeout_handle io_loop::call_later(clock::duration delay, callback fn)
{
    return timeout_handle(s_->add_timer(detail::later_by(delay), std::move(fn), "call_later"));
}

timeout_handle io_loop::call_at(clock::time_point when, callback fn)
{
    return timeout_handle(s_->add_timer(when, std::move(fn), "call_at"));
}

void io_loop::remove_timeout(const timeout_handle& handle)
{
    s_->check_thread("remove_timeout");
    auto t = handle.timer_.lock();
    if (!t || t->cancelled)
        return;
    if (t->loop != s_.get())
        throw std::invalid_argument("zmq::green::io_loop::remove_timeout: the timeout belongs to "
                                    "another loop");
    t->cancelled = true;
    t->fn = nullptr;
    s_->timers.erase(t->key);
}

void io_loop::set_error_handler(error_handler fn)
{
    s_->check_thread("set_error_handler");
    s_->on_error = std::move(fn);
}

void io_loop::handle_exception(std::exception_ptr e)
{
    s_->check_thread("handle_exception");
    s_->report(e ? std::move(e) : std::current_exception());
}

void io_loop::set_fallback_interval(std::chrono::milliseconds interval)
{
    s_->check_thread("set_fallback_interval");
    if (interval.count() < 0)
        throw std::invalid_argument("zmq::green::io_loop::set_fallback_interval: negative interval");
    s_->fallback.store(interval, std::memory_order_relaxed);
    s_->quiet_fallbacks = 0;
}

std::chrono::milliseconds io_loop::fallback_interval() const noexcept
{
    return s_->fallback.load(std::memory_order_relaxed);
}

io_loop_stats io_loop::stats() const noexcept
{
    const auto& c = s_->stats;
    io_loop_stats out;
    out.iterations = c.iterations.get();
    out.parks = c.parks.get();
    out.rescues = c.rescues.get();
    out.level_checks = c.level_checks.get();
    return out;
}

namespace {

io_loop::clock::duration checked_period(std::chrono::milliseconds period)
{
    // Half the clock's range: next_ + period must not overflow.
    constexpr auto longest = std::chrono::duration_cast<std::chrono::milliseconds>(
        io_loop::clock::duration::max() / 2);
    if (period.count() <= 0 || period > longest)
        throw std::invalid_argument("zmq::green::periodic_callback: the period must be positive "
                                    "and at most "
                                    + std::to_string(longest.count()) + " ms, got "
                                    + std::to_string(period.count()) + " ms");
    return period;
}

} // namespace

namespace detail {

// Shared with the pending timeout, which keeps it (and fn) alive while fn
// runs: fn may destroy its periodic_callback.
struct periodic_state : std::enable_shared_from_this<periodic_state> {
    periodic_state(io_loop& l, std::function<void()> f, io_loop::clock::duration p)
        : loop(l), fn(std::move(f)), period(p)
    {
    }

    void run(std::uint64_t of_start)
    {
        if (!running || of_start != starts)
            return;
        try {
            fn();
        } catch (...) {
            loop.handle_exception(std::current_exception());
        }
        // fn may have stopped it, or stopped and started it again, which
        // scheduled the next call already.
        if (running && of_start == starts)
            schedule_next();
    }

    void schedule_next()
    {
        const auto now = io_loop::clock::now();
        if (next <= now)
            next += ((now - next) / period + 1) * period;
        timeout = loop.call_at(next, [self = shared_from_this(), of_start = starts] {
            self->run(of_start);
        });
    }

    io_loop& loop;
    std::function<void()> fn;
    io_loop::clock::duration period;
    io_loop::clock::time_point next{};
    timeout_handle timeout;
    std::uint64_t starts = 0; // a timeout of an earlier start() must not run fn
    bool running = false;
};

} // namespace detail

periodic_callback::periodic_callback(io_loop& loop, std::function<void()> fn,
                                     std::chrono::milliseconds period)
    : s_(std::make_shared<detail::periodic_state>(loop, std::move(fn), checked_period(period)))
{
    if (!s_->fn)
        throw std::invalid_argument("zmq::green::periodic_callback: empty function");
    // Here, not first at stop() in the destructor, where it would terminate.
    detail::loop_access::check_thread(loop, "periodic_callback");
}

periodic_callback::~periodic_callback()
{
    // On another thread, a started one terminates naming the thread_error, as
    // a zmq_stream does: its timer belongs to the loop's thread.
    if (s_->running)
        stop();
}

void periodic_callback::start()
{
    if (s_->running)
        return;
    detail::loop_access::check_thread(s_->loop, "periodic_callback::start");
    if (s_->loop.closed())
        throw std::logic_error("zmq::green::periodic_callback::start: the loop is closed");
    s_->next = io_loop::clock::now();
    ++s_->starts;
    s_->schedule_next(); // first: if it throws, the callback has not started
    s_->running = true;
}

void periodic_callback::stop()
{
    s_->loop.remove_timeout(s_->timeout); // first: a foreign thread changes nothing
    s_->running = false;
}

bool periodic_callback::is_running() const noexcept { return s_->running; }

} // namespace zmq::green
