#include "reactor.hpp"

#include "socket_core.hpp"

#include <zmq/green/task.hpp>
#include <zmq/green/timeout.hpp>

#include <boost/fiber/scheduler.hpp>

#include <zmq.h>

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <unordered_set>
#include <vector>

namespace zmq::green::detail {

namespace {

// epoll_event.data.ptr for the eventfd that other threads write.
char wakefd_tag;

// Every thread's green sockets, so that a thread can refuse another's. Made
// on first use: a socket with static storage may come before this file's
// namespace-scope objects are, and then goes after them.
struct green_handle_set {
    green_handle_set()
    {
        // A device process is forked from an owner whose other threads may
        // hold the mutex at that moment; they do not follow into the child,
        // whose first green socket would then wait for them for ever. The
        // forking thread holds it across the fork instead.
        ::pthread_atfork([] { get().mutex.lock(); }, [] { get().mutex.unlock(); },
                         [] { get().mutex.unlock(); });
    }
    static green_handle_set& get()
    {
        static green_handle_set set;
        return set;
    }

    std::mutex mutex;
    std::unordered_set<void*> handles;
};

int checked(int rc, const char* what)
{
    if (rc < 0)
        throw std::system_error(errno, std::generic_category(), what);
    return rc;
}

short poll_to_zmq(std::uint32_t ev) noexcept
{
    short mask = 0;
    if (ev & (EPOLLIN | EPOLLRDHUP))
        mask |= ZMQ_POLLIN;
    // Urgent data does not make an fd readable: taken for ZMQ_POLLIN, it
    // would wake a reader whose poll then finds nothing, again and again.
    if (ev & EPOLLPRI)
        mask |= ZMQ_POLLPRI;
    if (ev & EPOLLOUT)
        mask |= ZMQ_POLLOUT;
    if (ev & (EPOLLERR | EPOLLHUP))
        mask |= ZMQ_POLLIN | ZMQ_POLLOUT | ZMQ_POLLERR;
    return mask;
}

} // namespace

interest::interest(reactor& r, park_slot& slot, std::size_t capacity) : reactor_(r), slot_(slot)
{
    socket_nodes_.reserve(capacity);
    fd_nodes_.reserve(capacity);
}

interest::~interest()
{
    socket_nodes_.clear();
    if (counted_)
        reactor_.wait_ended();
    for (auto& w : fd_nodes_) {
        w.node.unlink();
        reactor_.unwatch_fd(*w.watch);
    }
}

void interest::add_socket(socket_core& core, short mask)
{
    if (socket_nodes_.size() == socket_nodes_.capacity())
        throw std::logic_error("zmq::green: interest capacity exceeded");
    socket_nodes_.emplace_back(slot_, mask);
    core.waiters.push_back(socket_nodes_.back());
    count_wait();
}

void interest::count_wait() noexcept
{
    if (!counted_)
        reactor_.wait_started();
    counted_ = true;
}

void interest::add_fd(int fd, short events)
{
    if (fd_nodes_.size() == fd_nodes_.capacity())
        throw std::logic_error("zmq::green: interest capacity exceeded");
    fd_nodes_.push_back({wait_node(slot_, events), nullptr});
    try {
        fd_nodes_.back().watch = &reactor_.watch_fd(fd, fd_nodes_.back().node);
    } catch (...) {
        fd_nodes_.pop_back();
        throw;
    }
    count_wait();
}

wait_queue::wait_queue(const char* name) : owner_(hub::current().reactor()), name_(name) {}

wait_queue::~wait_queue()
{
    while (!waiters_.empty()) {
        park_slot& slot = *waiters_.front().slot;
        waiters_.pop_front();
        // One whose deadline woke it has not run yet: on a timeout it would
        // read the object that is going.
        if (!owner_->wake(slot, wake_reason::closed) && slot.reason == wake_reason::timeout)
            slot.reason = wake_reason::closed;
    }
}

void wait_queue::check_thread(const char* what) const
{
    if (reactor::current() != owner_.get())
        throw thread_error(std::string("zmq::green::") + what
                           + ": used from a thread that does not own it");
}

bool wait_queue::wait(clock::time_point deadline)
{
    park_slot slot;
    slot.deadline = deadline;
    const char* name = name_; // *this may be gone when the fiber wakes
    wake_reason why;
    {
        wait_node node(slot, 0);
        waiters_.push_back(node);
        why = owner_->park(slot);
    }
    throw_if_interrupted(why);
    if (why == wake_reason::closed)
        throw std::logic_error(std::string("zmq::green::") + name
                               + ": destroyed while a fiber waited for it");
    return why == wake_reason::event;
}

void wait_queue::notify_all() noexcept
{
    while (!waiters_.empty())
        notify_one();
}

void wait_queue::notify_one() noexcept
{
    while (!waiters_.empty()) {
        park_slot& slot = *waiters_.front().slot;
        waiters_.pop_front();
        if (owner_->wake(slot, wake_reason::event))
            return;
    }
}

void throw_if_interrupted(wake_reason why)
{
    if (why == wake_reason::scope_timeout)
        throw timeout_error("zmq::green: a scoped timeout expired during a green wait");
    if (why == wake_reason::cancelled)
        throw fiber_cancelled();
}

short to_poll_events(short zmq_events) noexcept
{
    short events = 0;
    if (zmq_events & ZMQ_POLLIN)
        events |= POLLIN;
    if (zmq_events & ZMQ_POLLOUT)
        events |= POLLOUT;
    if (zmq_events & ZMQ_POLLPRI)
        events |= POLLPRI;
    return events;
}

clock::time_point deadline_after(std::chrono::milliseconds timeout) noexcept
{
    return timeout.count() < 0 ? no_deadline : saturating_deadline(timeout);
}

std::chrono::milliseconds quiet_recheck_interval(std::chrono::milliseconds interval,
                                                 unsigned quiet) noexcept
{
    const unsigned shift = 2 * std::min(quiet, max_quiet_rechecks);
    const auto most = std::chrono::milliseconds::max();
    return interval.count() > (most.count() >> shift) ? most
                                                      : interval * (std::int64_t{1} << shift);
}

void check_wait_timeout(std::chrono::milliseconds timeout, const char* what, const char* name)
{
    if (timeout.count() < -1)
        throw std::invalid_argument(std::string("zmq::green::") + what + ": " + name
                                    + " must be -1 (forever) or >= 0 ms, not "
                                    + std::to_string(timeout.count()));
}

clock::time_point wait_deadline(std::chrono::milliseconds timeout, const char* what)
{
    check_wait_timeout(timeout, what);
    return deadline_after(timeout);
}

// Room for a thousand ready sockets per epoll_wait, as a hand-written loop
// over that many sockets would take them.
reactor::reactor() : events_(1024)
{
    try {
        epfd_ = checked(::epoll_create1(EPOLL_CLOEXEC), "zmq::green hub: epoll_create1");
        level_epfd_ = checked(::epoll_create1(EPOLL_CLOEXEC), "zmq::green hub: epoll_create1");
        wakefd_ = checked(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "zmq::green hub: eventfd");
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = &wakefd_tag;
        checked(::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev), "zmq::green hub: epoll_ctl");
    } catch (...) {
        close_fds(); // no destructor runs for a constructor that throws
        throw;
    }
}

reactor::~reactor() { close_fds(); }

void reactor::close_fds() noexcept
{
    for (int fd : {wakefd_, level_epfd_, epfd_})
        if (fd >= 0)
            ::close(fd);
}

void reactor::attach_hub(hub& h) noexcept
{
    hub_ = &h;
    this_thread_reactor = this;
}

void reactor::detach_hub(const hub& h) noexcept
{
    if (hub_ != &h)
        return;
    hub_ = nullptr;
    if (this_thread_reactor == this)
        this_thread_reactor = nullptr;
}

wake_reason reactor::park(park_slot& slot, bool interruptible) noexcept
{
    if (slot.ctx == nullptr)
        slot.ctx = boost::fibers::context::active();
    slot.reason = wake_reason::none;
    fiber_state* state = nullptr;
    bool scoped = false;
    if (interruptible) {
        state = find_fiber_state();
        if (state != nullptr) {
            if (std::exchange(state->kill_pending, false))
                return slot.reason = wake_reason::cancelled;
            if (state->deadline <= slot.deadline) {
                if (passed(state->deadline))
                    return slot.reason = wake_reason::scope_timeout;
                slot.deadline = state->deadline;
                scoped = true;
            }
            state->parked = &slot;
        }
    }
    if (slot.deadline != no_deadline)
        deadlines_.insert(slot);
    slot.ctx->suspend();
    if (state != nullptr) {
        state->parked = nullptr;
        if (scoped && slot.reason == wake_reason::timeout)
            slot.reason = wake_reason::scope_timeout;
    }
    return slot.reason;
}

fiber_state& reactor::attach_fiber_state()
{
    fiber_state& state = fiber_states_[boost::fibers::context::active()];
    ++state.users;
    return state;
}

void reactor::detach_fiber_state(fiber_state& state) noexcept
{
    if (--state.users == 0)
        fiber_states_.erase(boost::fibers::context::active());
}

fiber_state* reactor::find_fiber_state() noexcept
{
    if (fiber_states_.empty())
        return nullptr;
    const auto it = fiber_states_.find(boost::fibers::context::active());
    return it == fiber_states_.end() ? nullptr : &it->second;
}

void reactor::kill(fiber_state& state) noexcept
{
    // A fiber already woken for another reason meets the kill at its next wait.
    if (state.parked == nullptr || !wake(*state.parked, wake_reason::cancelled))
        state.kill_pending = true;
}

bool reactor::wake(park_slot& slot, wake_reason why) noexcept
{
    if (slot.reason != wake_reason::none)
        return false;
    slot.reason = why;
    if (slot.is_linked())
        slot.unlink();
    // Only the owning thread wakes its fibers, so slot.ctx's scheduler is this
    // thread's: context::schedule would find that out with a context::active().
    slot.ctx->get_scheduler()->schedule(slot.ctx);
    return true;
}

std::size_t reactor::wake_matching(wait_list& list, short events) noexcept
{
    std::size_t woken = 0;
    for (auto it = list.begin(); it != list.end();) {
        wait_node& node = *it;
        if ((node.mask & events) == 0) {
            ++it;
            continue;
        }
        it = list.erase(it);
        woken += wake(*node.slot, wake_reason::event) ? 1 : 0;
    }
    return woken;
}

int reactor::timeout_ms(clock::time_point until) const noexcept
{
    if (!deadlines_.empty())
        until = std::min(until, deadlines_.begin()->deadline);
    if (parked_waits_ > 0)
        until = std::min(until, next_sweep_);
    if (until == no_deadline)
        return -1;
    const auto now = clock::now();
    if (until <= now)
        return 0;
    // Round up: waking a little early would only spin until the deadline.
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
    return static_cast<int>(std::min<long long>(ms, INT_MAX));
}

void reactor::run(clock::time_point until, bool block) noexcept
{
    int timeout = 0;
    const std::chrono::milliseconds interval = fallback_interval();
    if (stirred_ && quiet_sweeps_ > 0) {
        // Activity since the last sweep: the next within the configured interval.
        quiet_sweeps_ = 0;
        if (next_sweep_ != no_deadline)
            next_sweep_ = std::min(next_sweep_, deadline_after(interval));
    }
    // Also when not blocking: fibers that keep the hub busy must not keep
    // the waits of the others from their re-check.
    if (parked_waits_ > 0 && next_sweep_ == no_deadline && interval.count() > 0)
        next_sweep_ = deadline_after(interval);
    if (block) {
        timeout = timeout_ms(until);
        sleeping_.store(true);
        if (notified_.exchange(false))
            timeout = 0;
    }
    int n = ::epoll_wait(epfd_, events_.data(), static_cast<int>(events_.size()), timeout);
    if (block)
        sleeping_.store(false);
    deliver(events_.data(), n);
    expire_deadlines();
    if (parked_waits_ == 0)
        next_sweep_ = no_deadline;
    else if (passed(next_sweep_))
        fallback_sweep();
    fresh_ = true;
}

void reactor::yield_behind_poll() noexcept
{
    // With no other fiber ready, yielding the same way or waiting on a
    // socket, nothing this fiber's send made ready could run first.
    if (parked_waits_ == 0 && deferred_.empty() && !others_ready())
        return;
    park_slot slot;
    wait_node node(slot, 0);
    deferred_.push_back(node);
    park(slot, false);
}

bool reactor::others_ready() const noexcept
{
    if (hub_ == nullptr)
        return false;
    for (const auto& ctx : hub_->rqueue_)
        if (!ctx.is_context(boost::fibers::type::dispatcher_context))
            return true;
    return false;
}

void reactor::release_deferred() noexcept
{
    while (!deferred_.empty()) {
        park_slot& slot = *deferred_.front().slot;
        deferred_.pop_front();
        wake(slot, wake_reason::event);
    }
}

void reactor::deliver(const epoll_event* events, int n) noexcept
{
    for (int i = 0; i < n; ++i) {
        if (events[i].data.ptr == &wakefd_tag) {
            std::uint64_t count;
            while (::read(wakefd_, &count, sizeof count) > 0) {
            }
            continue;
        }
        stirred_ = true;
        static_cast<io_source*>(events[i].data.ptr)->on_ready(events[i].events);
    }
}

void reactor::expire_deadlines() noexcept
{
    if (deadlines_.empty())
        return;
    const auto now = clock::now();
    while (!deadlines_.empty() && deadlines_.begin()->deadline <= now) {
        if (wake(*deadlines_.begin(), wake_reason::timeout))
            counts_.timer_wakeups.add();
    }
}

// Edges can be lost (a kernel or libzmq bug, or a wake-up this library forgot
// to deliver): then a socket's fd stays readable with a fiber parked on it.
// The level-triggered set finds those fds in one call, so the sweep costs
// nothing for sockets that are merely idle.
void reactor::fallback_sweep() noexcept
{
    counts_.rechecks.add();
    // It covers the activity before it; only activity after it needs the
    // next one within the interval.
    quiet_sweeps_ = std::min(quiet_sweeps_ + 1, max_quiet_rechecks);
    stirred_ = false;
    const std::chrono::milliseconds interval = fallback_interval();
    next_sweep_ = interval.count() > 0
                      ? deadline_after(quiet_recheck_interval(interval, quiet_sweeps_))
                      : no_deadline;
    recheck_sockets();
    recheck_fd_waits();
}

// The fds that fibers wait for (wait_readable, wait_writable) are few, and
// are polled one by one. A lost edge on one is rescued as a socket's is. An
// fd closed under its waiter (misuse) left the epoll set with its file, and
// no event will ever come: woken, the waiter polls it again and gets EBADF.
void reactor::recheck_fd_waits() noexcept
{
    std::vector<std::pair<int, short>> suspects;
    for (auto& [fd, watch] : fds_) {
        short wanted = 0;
        for (const wait_node& node : watch->waiters)
            wanted |= node.mask;
        if (wanted == 0)
            continue;
        // Only what is waited for: an eventfd, always writable, would
        // otherwise be a suspect at every re-check.
        pollfd pfd{fd, to_poll_events(wanted), 0};
        if (::poll(&pfd, 1, 0) > 0)
            suspects.emplace_back(fd, pfd.revents);
    }
    if (suspects.empty())
        return;
    // Made ready by another thread since this round's epoll_wait, an fd has
    // its edge queued, not lost: delivered first, it rescues nothing.
    deliver_pending();
    for (auto [fd, revents] : suspects) {
        const auto it = fds_.find(fd);
        if (it == fds_.end())
            continue;
        if (revents & POLLNVAL) {
            wake_matching(it->second->waiters, static_cast<short>(~0));
            continue;
        }
        const std::size_t rescued = wake_matching(it->second->waiters, poll_to_zmq(revents));
        if (rescued > 0)
            stirred_ = true; // maybe a lost edge: keep looking at the configured pace
        counts_.rescues.add(rescued);
    }
}

void reactor::recheck_sockets() noexcept
{
    std::array<epoll_event, 128> events;
    const int n = ::epoll_wait(level_epfd_, events.data(), static_cast<int>(events.size()), 0);
    if (n <= 0)
        return;
    std::vector<std::pair<socket_core*, std::uint64_t>> suspects;
    for (int i = 0; i < n; ++i) {
        auto* core = static_cast<socket_core*>(events[i].data.ptr);
        if (!core->waiters.empty() || !core->watchers.empty())
            suspects.emplace_back(core, core->edges);
    }
    if (suspects.empty())
        return;
    stirred_ = true; // maybe a lost edge: keep looking at the configured pace
    deliver_pending();
    for (auto [core, edges] : suspects) {
        if (core->edges != edges)
            continue;
        core->tell_watchers(nullptr, true);
        if (!core->waiters.empty())
            counts_.rescues.add(core->refresh(nullptr, true).woken);
    }
}

void reactor::deliver_pending() noexcept
{
    // All of them: an edge left queued would be taken for a lost one.
    std::array<epoll_event, 128> pending;
    int n;
    do {
        n = ::epoll_wait(epfd_, pending.data(), static_cast<int>(pending.size()), 0);
        deliver(pending.data(), n);
    } while (n == static_cast<int>(pending.size()));
}

void reactor::notify() noexcept
{
    // Only the dispatcher shutting down notifies from the hub's own thread,
    // once per round while the last fibers finish: that thread is awake, and
    // a flag would turn its every epoll_wait into a busy poll.
    if (this_thread_reactor == this)
        return;
    remote_wakeups_.fetch_add(1, std::memory_order_relaxed);
    notified_.store(true);
    if (sleeping_.load()) {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto rc = ::write(wakefd_, &one, sizeof one);
    }
}

void tell(watch_list& list, short events, const change_watch* except, bool lost_edge) noexcept
{
    for (change_watch& w : list)
        if (&w != except && (w.mask & events) != 0)
            w.changed(lost_edge);
}

void fd_watch::on_ready(std::uint32_t epoll_events) noexcept
{
    const short events = poll_to_zmq(epoll_events);
    owner.count_fd_wakeups(owner.wake_matching(waiters, events));
    if (!watchers.empty())
        tell(watchers, events, nullptr, false);
}

fd_watch& reactor::register_fd(int fd)
{
    if (const auto it = fds_.find(fd); it != fds_.end()) {
        // Its file may have been closed under it and the number reused: the
        // kernel dropped that entry, and the new file has none.
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;
        ev.data.ptr = static_cast<io_source*>(it->second.get());
        if (::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
            retire_fd(it);
    }
    auto& slot = fds_[fd];
    if (!slot) {
        auto watch = std::make_unique<fd_watch>(*this, fd);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;
        ev.data.ptr = static_cast<io_source*>(watch.get());
        if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
            const int err = errno;
            fds_.erase(fd);
            throw std::system_error(err, std::generic_category(),
                                    "zmq::green: cannot wait on fd " + std::to_string(fd)
                                        + (err == EEXIST ? " (it is a green socket's fd; "
                                                           "wait on the socket instead)"
                                                         : ""));
        }
        slot = std::move(watch);
    }
    ++slot->users;
    return *slot;
}

fd_watch& reactor::watch_fd(int fd, wait_node& node)
{
    fd_watch& watch = register_fd(fd);
    watch.waiters.push_back(node);
    return watch;
}

fd_watch& reactor::watch_fd(int fd, change_watch& w)
{
    fd_watch& watch = register_fd(fd);
    watch.watchers.push_back(w);
    return watch;
}

void reactor::unwatch_fd(fd_watch& watch) noexcept
{
    if (--watch.users > 0 || watch.stale)
        return;
    const auto it = fds_.find(watch.fd);
    if (::epoll_ctl(epfd_, EPOLL_CTL_DEL, watch.fd, nullptr) == 0)
        fds_.erase(it);
    else
        retire_fd(it); // the fd was closed under its watchers: see retire_fd
}

// Someone closed the fd while it was registered. Its epoll entry goes with
// the file, which a dup or a forked child may keep open, and cannot be
// removed without the fd: the watch must outlive any event of that entry.
// Only misuse gets here (closing an fd before its handler or wait is gone),
// so keeping a few empty watches is cheaper than tagging every event.
void reactor::retire_fd(std::unordered_map<int, std::unique_ptr<fd_watch>>::iterator it) noexcept
{
    std::unique_ptr<fd_watch> watch = std::move(it->second);
    fds_.erase(it);
    watch->stale = true;
    // No event will reach them through the dead entry: woken, they look at
    // the fd again (EBADF, or whatever the number is now).
    wake_matching(watch->waiters, static_cast<short>(~0));
    if (!watch->watchers.empty())
        tell(watch->watchers, ZMQ_POLLIN | ZMQ_POLLOUT | ZMQ_POLLERR, nullptr, false);
    try {
        retired_.push_back(std::move(watch));
    } catch (...) {
        (void)watch.release(); // leaked rather than freed under the kernel's entry
    }
}

bool reactor::wait_fd(int fd, short events, clock::time_point deadline, bool interruptible)
{
    for (;;) {
        pollfd pfd{fd, to_poll_events(events), 0};
        const int rc = ::poll(&pfd, 1, 0);
        if (rc < 0 && errno != EINTR)
            throw std::system_error(errno, std::generic_category(), "zmq::green: poll");
        // poll() skips a negative fd instead of reporting it: a wait with a
        // timeout would just time out.
        if (fd < 0 || (rc > 0 && (pfd.revents & POLLNVAL)))
            throw std::system_error(EBADF, std::generic_category(),
                                    "zmq::green: cannot wait on fd " + std::to_string(fd));
        if (rc > 0)
            return true;
        if (passed(deadline))
            return false;
        park_slot slot;
        slot.deadline = deadline;
        wait_node node(slot, static_cast<short>(events | ZMQ_POLLERR));
        fd_watch& watch = watch_fd(fd, node);
        wait_started();
        const wake_reason why = park(slot, interruptible);
        wait_ended();
        node.unlink();
        unwatch_fd(watch);
        throw_if_interrupted(why);
    }
}

void reactor::add_socket(socket_core& core)
{
    // A watch still filed under this fd number was left by a file closed
    // under its watchers: the number is the socket's now, and removing that
    // watch later must not remove the socket's entry.
    if (const auto it = fds_.find(core.fd); it != fds_.end())
        retire_fd(it);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.ptr = static_cast<io_source*>(&core);
    checked(::epoll_ctl(epfd_, EPOLL_CTL_ADD, core.fd, &ev), "zmq::green: epoll_ctl");
    epoll_event level{};
    level.events = EPOLLIN;
    level.data.ptr = &core;
    if (::epoll_ctl(level_epfd_, EPOLL_CTL_ADD, core.fd, &level) != 0) {
        const int err = errno;
        ::epoll_ctl(epfd_, EPOLL_CTL_DEL, core.fd, nullptr);
        throw std::system_error(err, std::generic_category(), "zmq::green: epoll_ctl");
    }
    sockets_.emplace(core.handle, &core);
    auto& green = green_handle_set::get();
    std::lock_guard<std::mutex> lock(green.mutex);
    green.handles.insert(core.handle);
}

bool is_green_socket(void* handle)
{
    auto& green = green_handle_set::get();
    std::lock_guard<std::mutex> lock(green.mutex);
    return green.handles.count(handle) != 0;
}

void reactor::remove_socket(socket_core& core) noexcept
{
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, core.fd, nullptr);
    ::epoll_ctl(level_epfd_, EPOLL_CTL_DEL, core.fd, nullptr);
    sockets_.erase(core.handle);
    auto& green = green_handle_set::get();
    std::lock_guard<std::mutex> lock(green.mutex);
    green.handles.erase(core.handle);
}

socket_core* reactor::find_socket(void* handle) const noexcept
{
    const auto it = sockets_.find(handle);
    return it == sockets_.end() ? nullptr : it->second;
}

std::vector<socket_core*> reactor::sockets_of(const context_core& ctx) const
{
    std::vector<socket_core*> found;
    for (const auto& entry : sockets_)
        if (entry.second->ctx.get() == &ctx)
            found.push_back(entry.second);
    return found;
}

hub_stats reactor::stats() const noexcept
{
    hub_stats s;
    s.fd_wakeups = counts_.fd_wakeups.get();
    s.timer_wakeups = counts_.timer_wakeups.get();
    s.remote_wakeups = remote_wakeups_.load(std::memory_order_relaxed);
    s.rescues = counts_.rescues.get();
    s.rechecks = counts_.rechecks.get();
    return s;
}

void reactor::set_fallback_interval(std::chrono::milliseconds interval)
{
    // The re-check's schedule below is the hub thread's alone.
    if (!on_owner_thread())
        throw thread_error("zmq::green::hub::set_fallback_interval: used from a thread that "
                           "does not own the hub");
    if (interval.count() < 0)
        throw std::invalid_argument("zmq::green::hub::set_fallback_interval: negative interval");
    fallback_.store(interval, std::memory_order_relaxed);
    next_sweep_ = no_deadline;
    quiet_sweeps_ = 0;
}

} // namespace zmq::green::detail
