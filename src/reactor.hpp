// Internals of the hub: epoll, deadlines and parked fibers. One per thread.
#pragma once

#include "relaxed_count.hpp"

#include <zmq/green/hub.hpp>

#include <boost/fiber/context.hpp>
#include <boost/intrusive/list.hpp>
#include <boost/intrusive/set.hpp>

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

struct epoll_event;

namespace zmq::green {
class scoped_timeout;
}

namespace zmq::green::detail {

using clock = std::chrono::steady_clock;
constexpr clock::time_point no_deadline = clock::time_point::max();

// Whether deadline has come; waits without one (the common case) skip the
// clock read.
inline bool passed(clock::time_point deadline) noexcept
{
    return deadline != no_deadline && deadline <= clock::now();
}

// How often a wait re-reads a level that no edge can announce: a plain
// socket's, whose operations the hub does not see, or a send that ZMQ_EVENTS
// calls ready and that fails, after a ZMQ_EVENTS read made for other waiters
// may have consumed the command that would let it through.
constexpr std::chrono::milliseconds blind_recheck{10};

inline clock::time_point recheck_deadline(clock::time_point deadline) noexcept
{
    return std::min(deadline, clock::now() + blind_recheck);
}

// The fallback re-check's pace, the hub's and each io_loop's: `interval`
// after activity, then four times later after each quiet re-check, up to 64
// times (quiet counts them, at most max_quiet_rechecks). Nothing this library
// does can lose an edge without activity, and a lost edge leaves its fd
// readable until a re-check finds it: an idle thread all but stops waking,
// and an edge the kernel drops stays bounded. Saturates.
constexpr unsigned max_quiet_rechecks = 3;
std::chrono::milliseconds quiet_recheck_interval(std::chrono::milliseconds interval,
                                                 unsigned quiet) noexcept;

using auto_unlink = boost::intrusive::link_mode<boost::intrusive::auto_unlink>;

// Why a parked fiber woke. scope_timeout and cancelled interrupt a green wait:
// its caller cleans up, then throw_if_interrupted() raises them.
enum class wake_reason : unsigned char { none, event, timeout, closed, scope_timeout, cancelled };

// A parked fiber. Whoever wakes it first (an event, its deadline, a close)
// decides why; later wake attempts are ignored, so it is scheduled once.
struct park_slot : boost::intrusive::set_base_hook<auto_unlink> {
    boost::fibers::context* ctx = nullptr; // park() sets it unless the caller knows it
    clock::time_point deadline = no_deadline;
    wake_reason reason = wake_reason::none;
};

struct by_deadline {
    bool operator()(const park_slot& a, const park_slot& b) const noexcept
    {
        return a.deadline < b.deadline;
    }
};

// One fiber's interest (mask of ZMQ_POLLIN/ZMQ_POLLOUT/ZMQ_POLLERR, and
// ZMQ_POLLPRI for a raw fd) in one socket or fd. Lives on the waiting fiber's
// stack; unlinks itself.
struct wait_node : boost::intrusive::list_base_hook<auto_unlink> {
    wait_node(park_slot& s, short m) noexcept : slot(&s), mask(m) {}
    park_slot* slot;
    short mask;
};

using wait_list = boost::intrusive::list<wait_node, boost::intrusive::constant_time_size<false>>;

// A socket waiter's mask bit, beside libzmq's events: woken by the socket's
// next signal (an edge, or one the fallback re-check found), an error or a
// close, whatever ZMQ_EVENTS says.
constexpr short any_change = 0x100;

// An io_loop handler's hold on a socket or fd. Unlike a parked fiber it does
// not make operations read ZMQ_EVENTS: it is only told that the state may
// have changed (an edge, an operation, a close), which costs no syscall, and
// reads the level itself when the loop gets to it.
class change_watch : public boost::intrusive::list_base_hook<auto_unlink> {
public:
    // lost_edge: the fallback re-check found a signal no edge announced.
    virtual void changed(bool lost_edge) noexcept = 0;

    // The edges of a raw fd it is told of (ZMQ_POLLIN/ZMQ_POLLOUT/ZMQ_POLLERR):
    // reading an eventfd, or a peer's ACK, brings a POLLOUT edge that a
    // reader has no use for.
    short mask = ZMQ_POLLIN | ZMQ_POLLOUT | ZMQ_POLLERR;

protected:
    ~change_watch() = default;
};

using watch_list =
    boost::intrusive::list<change_watch, boost::intrusive::constant_time_size<false>>;

// Tells every watch in list whose mask meets events, but except, that the
// state may have changed.
void tell(watch_list& list, short events, const change_watch* except, bool lost_edge) noexcept;

// What a fiber carries from one green wait to the next: the earliest deadline
// of its scoped timeouts and a kill nobody has delivered yet. Only fibers
// that use scoped timeouts or run as tasks have one.
struct fiber_state {
    clock::time_point deadline = no_deadline; // the earliest of its scopes
    scoped_timeout* innermost = nullptr;      // its live scoped timeouts, a list
    bool kill_pending = false;
    park_slot* parked = nullptr; // its current interruptible wait
    unsigned users = 0;          // scoped timeouts and a task keep it
};

// Something registered with the reactor's epoll set.
class io_source {
public:
    virtual void on_ready(std::uint32_t epoll_events) noexcept = 0;

protected:
    ~io_source() = default;
};

class socket_core;
struct context_core;

// A raw fd in the epoll set, registered while fibers wait on it or io_loop
// handlers watch it.
struct fd_watch final : io_source {
    explicit fd_watch(class reactor& r, int f) noexcept : owner(r), fd(f) {}
    void on_ready(std::uint32_t epoll_events) noexcept override;

    class reactor& owner;
    int fd;
    wait_list waiters;
    watch_list watchers;
    // Registrations, not waiters: a woken waiter leaves the list before it
    // unregisters, and another fiber's registration may still be alive.
    int users = 0;
    bool stale = false; // retired: its fd was closed under it (see retire_fd)
};

class reactor;

// The calling thread's reactor. Every socket call checks it, so it is read
// inline rather than through a call into reactor.cpp.
inline thread_local reactor* this_thread_reactor = nullptr;

class reactor {
public:
    // Throws std::system_error if the kernel gives no epoll set or eventfd.
    // Serves no hub until attach_hub.
    reactor();
    ~reactor();
    reactor(const reactor&) = delete;
    reactor& operator=(const reactor&) = delete;

    // The reactor of the calling thread's hub, or nullptr.
    static reactor* current() noexcept { return this_thread_reactor; }

    bool alive() const noexcept { return hub_ != nullptr; }
    // The thread this reactor serves, also once its hub has gone at that
    // thread's exit, when objects of static or thread storage are destroyed.
    bool on_owner_thread() const noexcept
    {
        return this_thread_reactor == this
               || (hub_ == nullptr && thread_ == std::this_thread::get_id());
    }
    // The hub installed on the thread, which may replace an earlier one.
    void attach_hub(hub& h) noexcept;
    // h goes: unless a later hub took this reactor over, it has none.
    void detach_hub(const hub& h) noexcept;
    bool serves(const hub& h) const noexcept { return hub_ == &h; }

    // Suspends the running fiber until something wakes slot (or its deadline
    // passes, if it has one). Returns why it woke. An interruptible park also
    // ends at the fiber's scoped deadline and on a kill, without suspending
    // if either is already due.
    wake_reason park(park_slot& slot, bool interruptible = true) noexcept;
    // Makes slot's fiber ready, unless something already did. Returns true if
    // this call woke it.
    bool wake(park_slot& slot, wake_reason why) noexcept;
    // Wakes the waiters in list whose mask intersects events, unlinking them.
    std::size_t wake_matching(wait_list& list, short events) noexcept;

    // Waits for events (at most until `until` when block, not at all
    // otherwise), then wakes the fibers whose events or deadlines came.
    void run(clock::time_point until, bool block) noexcept;
    // run() without blocking, unless the dispatcher's previous turn ran
    // run(): while fibers stay ready, every second turn polls. Not at all
    // while nothing could come of it: no fiber waits for a socket, an fd or
    // a deadline, and no fd is watched (every io_loop watches its wakefd,
    // so none exists). Two fibers answering each other through inproc
    // sockets then switch without a syscall of this library's (L1: 3.5 to
    // 3.0 us a round trip).
    void poll_unless_fresh() noexcept
    {
        if (parked_waits_ == 0 && deadlines_.empty() && fds_.empty())
            return;
        if (!std::exchange(fresh_, false))
            run(clock::time_point{}, false);
    }
    void notify() noexcept;

    // Suspends the running fiber until the dispatcher's next turn, so that
    // the fibers ready now, and those its epoll poll wakes, run first.
    // Returns at once if no fiber of this hub waits on a socket or yielded
    // this way.
    void yield_behind_poll() noexcept;
    // The dispatcher's turn, after its poll: readies the deferred fibers.
    void release_deferred() noexcept;
    bool has_deferred() const noexcept { return !deferred_.empty(); }

    // Waits until the raw fd has one of events (ZMQ_POLLIN/ZMQ_POLLOUT) or
    // the deadline passes. Returns false on timeout. Interruptible as park().
    bool wait_fd(int fd, short events, clock::time_point deadline, bool interruptible = true);
    // Registers node for events on raw fd; the caller then parks.
    fd_watch& watch_fd(int fd, wait_node& node);
    // Tells w of every edge on raw fd until w unlinks and unwatch_fd.
    fd_watch& watch_fd(int fd, change_watch& w);
    void unwatch_fd(fd_watch& watch) noexcept;

    void add_socket(socket_core& core);
    void remove_socket(socket_core& core) noexcept;
    socket_core* find_socket(void* handle) const noexcept;
    // This thread's open sockets of the context ctx.
    std::vector<socket_core*> sockets_of(const context_core& ctx) const;

    // Fibers parked on sockets or fds arm the fallback re-check.
    void wait_started() noexcept
    {
        ++parked_waits_;
        stirred_ = true;
    }
    void wait_ended() noexcept { --parked_waits_; }

    // The running fiber's state, created on first use; detach when done.
    fiber_state& attach_fiber_state();
    void detach_fiber_state(fiber_state& state) noexcept;
    // The running fiber's state, or nullptr.
    fiber_state* find_fiber_state() noexcept;
    // Makes the fiber's next interruptible wait (or the current one) end
    // with wake_reason::cancelled.
    void kill(fiber_state& state) noexcept;

    // Any thread may read them.
    hub_stats stats() const noexcept;
    void count_fd_wakeups(std::size_t n) noexcept { counts_.fd_wakeups.add(n); }

    std::chrono::milliseconds fallback_interval() const noexcept
    {
        return fallback_.load(std::memory_order_relaxed);
    }
    // Throws thread_error on another thread.
    void set_fallback_interval(std::chrono::milliseconds interval);

    // The fallback re-check: finds the sockets whose fd holds a signal that
    // no edge announced, and wakes their waiters and tells their watchers.
    // One epoll_wait however many sockets exist.
    void recheck_sockets() noexcept;
    // Delivers the edges epoll holds now, without waiting: a re-check that
    // finds something ready must not count an edge not yet delivered as lost.
    void deliver_pending() noexcept;

private:
    bool others_ready() const noexcept; // a fiber other than the dispatcher
    void deliver(const ::epoll_event* events, int n) noexcept;
    void expire_deadlines() noexcept;
    void fallback_sweep() noexcept;
    void recheck_fd_waits() noexcept;
    int timeout_ms(clock::time_point until) const noexcept;
    void close_fds() noexcept;
    fd_watch& register_fd(int fd);
    void retire_fd(std::unordered_map<int, std::unique_ptr<fd_watch>>::iterator it) noexcept;

    hub* hub_ = nullptr;
    const std::thread::id thread_ = std::this_thread::get_id();
    int epfd_ = -1;
    // The same socket fds, level-triggered: what is readable right now. The
    // fallback sweep asks it which sockets have a signal nobody consumed.
    int level_epfd_ = -1;
    int wakefd_ = -1;
    std::atomic<bool> sleeping_{false};
    std::atomic<bool> notified_{false};
    std::atomic<std::uint64_t> remote_wakeups_{0};
    // hub_stats, which a monitoring thread may read.
    struct {
        relaxed_count fd_wakeups, timer_wakeups, rescues, rechecks;
    } counts_;

    boost::intrusive::multiset<park_slot, boost::intrusive::compare<by_deadline>,
                               boost::intrusive::constant_time_size<false>>
        deadlines_;
    std::unordered_map<void*, socket_core*> sockets_;
    std::unordered_map<int, std::unique_ptr<fd_watch>> fds_;
    // Watches whose epoll entry may outlive their fd: kept, empty, until the
    // reactor goes, so that a late event never reaches freed memory.
    std::vector<std::unique_ptr<fd_watch>> retired_;
    std::unordered_map<boost::fibers::context*, fiber_state> fiber_states_;
    wait_list deferred_;
    std::vector<::epoll_event> events_; // run()'s buffer

    std::size_t parked_waits_ = 0;
    std::atomic<std::chrono::milliseconds> fallback_{std::chrono::milliseconds{1000}};
    clock::time_point next_sweep_ = no_deadline;
    // A socket event or a new socket wait since the last sweep: the next
    // comes one interval after it (quiet_recheck_interval).
    bool stirred_ = false;
    unsigned quiet_sweeps_ = 0;
    bool fresh_ = false; // run() ran since the dispatcher last picked a fiber
};

// One fiber's interest in several sockets and fds for one park: what
// zmq::green::poll and the io_loop register before they park on one slot.
// Everything is unregistered when it goes.
class interest {
public:
    interest(reactor& r, park_slot& slot, std::size_t capacity);
    ~interest();
    interest(const interest&) = delete;
    interest& operator=(const interest&) = delete;

    void add_socket(socket_core& core, short mask);
    void add_fd(int fd, short events);

private:
    struct fd_wait {
        wait_node node;
        fd_watch* watch;
    };

    void count_wait() noexcept; // once per interest, however many it waits for

    reactor& reactor_;
    park_slot& slot_;
    // Nodes are linked into intrusive lists: they must never move.
    std::vector<wait_node> socket_nodes_;
    std::vector<fd_wait> fd_nodes_;
    bool counted_ = false;
};

// Fibers of one hub waiting to be told something (a task ended, an event
// was set, a pool has room). Waiting on it is a green wait.
class wait_queue {
public:
    // name: what the queue belongs to, for the error its waiters get if it
    // goes while they wait.
    explicit wait_queue(const char* name);
    // Wakes its waiters, whose wait() then throws std::logic_error: they wait
    // for an object that is gone.
    ~wait_queue();
    wait_queue(const wait_queue&) = delete;
    wait_queue& operator=(const wait_queue&) = delete;
    // Parks until notified or the deadline passes; false on timeout.
    bool wait(clock::time_point deadline);
    void notify_all() noexcept;
    void notify_one() noexcept;
    // Throws thread_error unless called on the thread that created it.
    void check_thread(const char* what) const;

private:
    std::shared_ptr<reactor> owner_;
    wait_list waiters_;
    const char* name_;
};

// Raises what an interrupted green wait ends with: timeout_error for a
// scoped timeout, fiber_cancelled for a kill. Other reasons return.
void throw_if_interrupted(wake_reason why);

// handle is a green socket of some thread (any hub's).
bool is_green_socket(void* handle);

// ZMQ_POLLIN/ZMQ_POLLOUT as poll(2)'s POLLIN/POLLOUT.
short to_poll_events(short zmq_events) noexcept;

// Deadline after timeout from now; negative timeouts never expire.
clock::time_point deadline_after(std::chrono::milliseconds timeout) noexcept;
// std::invalid_argument naming the call `what`, unless timeout is -1
// (forever) or >= 0 ms; `name` says which of its arguments it is.
void check_wait_timeout(std::chrono::milliseconds timeout, const char* what,
                        const char* name = "timeout");
// The deadline of a public call's timeout argument: -1 is forever, other
// negative values are std::invalid_argument naming the call `what`.
clock::time_point wait_deadline(std::chrono::milliseconds timeout, const char* what);

} // namespace zmq::green::detail
