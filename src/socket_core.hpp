// The state behind a green socket: its waiters, and the one place that reads
// ZMQ_EVENTS and wakes them.
#pragma once

#include "context_core.hpp"
#include "reactor.hpp"

#include <boost/fiber/context.hpp>
#include <boost/fiber/operations.hpp>

#include <zmq.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace zmq::green::detail {

// What libzmq (without the draft API) lets a socket type do.
inline bool can_receive(int type) noexcept { return type != ZMQ_PUB && type != ZMQ_PUSH; }
inline bool can_send(int type) noexcept { return type != ZMQ_SUB && type != ZMQ_PULL; }

// One direction (send or recv) of a socket. The fiber that owns it is the
// only one that tries the operation or parks for readiness; the others queue
// for ownership in arrival order. Ownership lasts from the first frame of a
// message to the last, so messages are never interleaved.
struct direction {
    boost::fibers::context* owner = nullptr;
    wait_list queue;
};

struct refresh_result {
    int events = 0; // ZMQ_POLLIN/ZMQ_POLLOUT, when error == 0
    int error = 0;  // errno of the failed ZMQ_EVENTS read (ETERM, ENOTSOCK)
    std::size_t woken = 0;
};

class socket_core final : public io_source {
public:
    socket_core(std::shared_ptr<reactor> r, std::shared_ptr<context_core> ctx, void* handle,
                int fd);
    socket_core(const socket_core&) = delete;
    socket_core& operator=(const socket_core&) = delete;

    void on_ready(std::uint32_t epoll_events) noexcept override;

    // Reads ZMQ_EVENTS, which also consumes the fd's pending signal, and
    // wakes every waiter whose event is now ready (all of them on error).
    // Call it after anything that may have consumed a signal: an operation,
    // a user's ZMQ_EVENTS read, bind/connect, an edge. Tells the watchers
    // too, except `reader`, the one reading. A signal (an edge, or one the
    // fallback re-check found) also wakes the any_change waiters.
    refresh_result refresh(const change_watch* reader = nullptr,
                           bool signalled = false) noexcept;

    // refresh() if anybody waits: the cheap form for after an operation.
    void after_op() noexcept
    {
        if (!waiters.empty())
            refresh();
        else
            tell_watchers();
    }

    // After the last frame of a message went in direction `event`.
    void completed(short event) noexcept
    {
        sent_last = lockstep_inproc && event == ZMQ_POLLOUT;
        if (counts_replies && event == ZMQ_POLLOUT)
            ++replies_since_commands;
        after_op();
    }

    // Before a REP's receive: see replies_since_commands.
    void refresh_stale_reply_count() noexcept;

    // Runs op, a non-blocking libzmq call (returns >= 0, or -1 with errno),
    // in direction dir, parking the fiber until the socket has `event` as
    // needed. op sets its bool argument when the message continues.
    // caller is the calling fiber if known, else null; perform fills it in
    // when it needs it, so the frames of one message look it up once.
    // Returns op's result, or -1 for "would block" (dontwait or the
    // timeout option timeo_option passed); throws zmq::error_t otherwise.
    template<class Op>
    int perform(direction& dir, short event, bool dontwait, int timeo_option,
                boost::fibers::context*& caller, Op&& op);

    // Ends the messages the fiber caller owns a direction for, and hands
    // the directions on (see message_frames).
    void abandon(boost::fibers::context* caller) noexcept;
    // self now owns a direction between two frames of a message: if it ends
    // before the last frame (an exception, a kill), the end of the fiber
    // abandons the message, or the fibers queued for the direction would
    // wait for ever, and a new fiber given the dead one's pooled stack (and
    // so its context's address) would be taken for the owner.
    // Throws what the list's allocation threw, after abandoning the message.
    void owned_past_the_call(boost::fibers::context* self);

    // Wakes every waiter with ENOTSOCK and closes the libzmq socket.
    void close() noexcept;

    // Whether the calling thread may touch this state: the owner's, or any
    // once the owner's hub has gone.
    bool touchable_here() const noexcept
    {
        return reactor::current() == &owner || !owner.alive();
    }

    void retain() noexcept { ++refs_; }
    void release() noexcept
    {
        if (--refs_ == 0)
            delete this;
    }

    std::shared_ptr<reactor> owner_ref; // outlives the hub if the socket does
    reactor& owner;
    std::shared_ptr<context_core> ctx;
    void* handle;
    int fd;
    wait_list waiters;     // parked until ZMQ_EVENTS meets their mask (ZMQ_POLLERR: fails)
    watch_list watchers;   // io_loop handlers
    direction send_dir;
    direction recv_dir;
    std::uint64_t edges = 0; // edges epoll delivered; the fallback sweep compares
    bool closed = false;
    // A REQ or REP socket with only inproc peers (so far): after a send, its
    // answer can only come from the peer's own turn (see perform). Over tcp
    // or ipc it comes from libzmq's I/O thread, and yielding first only
    // costs switches.
    bool lockstep_inproc = false;
    bool sent_last = false;
    // A REP drops a reply, silently, when its count of the replies its peer
    // has read says the pipe is full as the request comes in (the request's
    // envelope opens the reply), and that count advances only when the REP
    // processes libzmq's commands: a REP whose receives all succeed at once
    // (after the lockstep yield, after other work, with requests queued)
    // would never see its peer read. So a REP counts its replies since it
    // last processed commands where its peer had read them all (before a
    // receive that finds a request, whose peer read every reply before it
    // asked; or a receive that fails), and reads ZMQ_EVENTS before a receive
    // once the count could make the pipe look full. Other reads do not
    // count: the peer may not have read the last reply yet.
    bool counts_replies = false;
    unsigned replies_since_commands = 0;
    // PUSH, DEALER, REQ: libzmq's load balancer, which drops the rest of a
    // message whose later frame it refused (see perform).
    bool drops_after_failed_frame = false;
    // monitor_t inits on the socket so far: libzmq keeps one monitor per
    // socket, and a monitor replaced by a newer one must not stop that one.
    unsigned monitors = 0;
    // A monitor_t's own socket, which its user cannot close: a context
    // closing on its thread closes it, or a monitor nobody reads would hold
    // that close() up for ever.
    bool of_monitor = false;

    // Tells the watchers, but except, that the state may have changed.
    void tell_watchers(const change_watch* except = nullptr, bool lost_edge = false) noexcept
    {
        if (!watchers.empty())
            tell(watchers, ZMQ_POLLIN | ZMQ_POLLOUT | ZMQ_POLLERR, except, lost_edge);
    }

private:
    ~socket_core() = default;

    // Queues for dir and parks until it is handed over. False on timeout;
    // throws when the socket fails meanwhile (ETERM: context shutdown).
    bool acquire(direction& dir, clock::time_point deadline);
    void release(direction& dir) noexcept;
    wake_reason wait_ready(boost::fibers::context* self, short event,
                           clock::time_point deadline) noexcept;
    // Ends the message being sent with an empty last frame: queued frames
    // cannot be taken back.
    void end_send() noexcept { zmq_send(handle, nullptr, 0, ZMQ_DONTWAIT); }
    clock::time_point deadline_from_option(int timeo_option) const noexcept;
    void keep_until_the_end(boost::fibers::context* self);
    [[noreturn]] void throw_closed() const;

    unsigned refs_ = 1;
};

// Keeps a core alive while its fiber is parked: close() may run meanwhile.
class core_guard {
public:
    explicit core_guard(socket_core& c) noexcept : core_(c) { core_.retain(); }
    ~core_guard() { core_.release(); }
    core_guard(const core_guard&) = delete;
    core_guard& operator=(const core_guard&) = delete;

    const socket_core& core() const noexcept { return core_; }

private:
    socket_core& core_;
};

// Always inlined: each socket operation instantiates it once, and calling it
// cost T2 about 40 instructions per operation (cachegrind).
template<class Op>
inline __attribute__((always_inline)) int
socket_core::perform(direction& dir, short event, bool dontwait, int timeo_option,
                     boost::fibers::context*& caller, Op&& op)
{
    // context::active() costs two thread-local lookups in another library.
    auto caller_ctx = [&caller] {
        if (caller == nullptr)
            caller = boost::fibers::context::active();
        return caller;
    };
    bool more = false;
    bool just_tried = false;
    // A lockstep socket that has just sent waits for an answer the peer has
    // not written yet when the peer is a fiber of this hub. Trying first
    // would fail, put libzmq's pipe to sleep and make the answer cost a
    // command: an eventfd write, an epoll_wait and a ZMQ_EVENTS read. So the
    // fiber first lets the others, and whoever epoll finds ready, have their
    // turn; then the answer is usually there and the pipe never sleeps.
    if (event == ZMQ_POLLIN && std::exchange(sent_last, false) && !dontwait
        && dir.owner == nullptr) {
        core_guard keep(*this);
        owner.yield_behind_poll();
        if (closed)
            throw_closed();
    }
    // Fast path: nobody owns the direction, so nobody is queued either.
    if (dir.owner == nullptr) {
        if (replies_since_commands != 0 && event == ZMQ_POLLIN)
            refresh_stale_reply_count();
        const int rc = op(more);
        if (rc >= 0) {
            if (more) {
                dir.owner = caller_ctx();
                owned_past_the_call(caller);
            } else {
                completed(event);
            }
            return rc;
        }
        if (errno != EAGAIN && errno != EINTR) {
            const int err = errno;
            after_op();
            throw zmq::error_t(err);
        }
        if (event == ZMQ_POLLIN && errno == EAGAIN)
            replies_since_commands = 0; // the failed receive processed them
        if (dontwait && errno == EAGAIN) {
            // The failed call may have consumed a signal others wait for.
            after_op();
            return -1;
        }
        just_tried = errno == EAGAIN;
    }

    core_guard keep(*this);
    boost::fibers::context* const self = caller_ctx();
    clock::time_point deadline{};
    bool have_deadline = false;
    auto get_deadline = [&] {
        if (!have_deadline) {
            deadline = deadline_from_option(timeo_option);
            have_deadline = true;
        }
        return deadline;
    };

    // A message already begun by this fiber. libzmq counts whole messages
    // against HWM, so a later frame is refused only when the message's pipe
    // has gone, with the frames queued so far: then the wait is for another
    // peer and may never end, and a kill or timeout may end it. A load
    // balancing socket then drops frames until a last one: giving up on a
    // frame that was not the last ends the message, or the next sender's
    // message would be dropped, reported sent. Others keep no such state, and
    // an empty frame could reach a peer that came meanwhile as a message.
    const bool continuing = dir.owner == self;
    // Returns whether it ended the message: that call may have consumed a
    // signal others wait for, and the caller must run after_op().
    auto give_up = [&] {
        const bool end = continuing && more && event == ZMQ_POLLOUT && drops_after_failed_frame;
        if (end)
            end_send();
        release(dir);
        return end;
    };
    if (!continuing) {
        if (dontwait) {
            // Another fiber owns the direction and may be ready to run: let
            // it, or a caller looping on poll() and a non-blocking call
            // would spin with the owner never getting its turn.
            boost::this_fiber::yield();
            if (closed) // meanwhile
                throw_closed();
            errno = EAGAIN;
            return -1;
        }
        if (dir.owner != nullptr && !acquire(dir, get_deadline())) {
            errno = EAGAIN;
            return -1;
        }
        dir.owner = self;
        if (replies_since_commands != 0 && event == ZMQ_POLLIN)
            refresh_stale_reply_count();
    }

    // Set once ZMQ_EVENTS said ready and the retry failed all the same: the
    // level is about any pipe (ROUTER_MANDATORY sends to one peer; XPUB_NODROP
    // always says POLLOUT), so only a command can change the answer. The level
    // read processed the commands that came before it, and the next one
    // brings an edge: from then on the fiber waits for edges, as a blocking
    // libzmq call waits for commands, and reads the level only for others.
    // A failed send processes commands at most once a millisecond, so after
    // an edge (which the hub may have taken while this fiber was woken but
    // not yet running) it reads the level again, which processes them, and
    // retries.
    bool level_disagrees = false;
    std::uint64_t edges_at_read = edges - 1; // none read yet
    bool blind = false; // the level read may have taken the command this call waits for
    for (;;) {
        if (closed)
            throw_closed();
        const int rc = std::exchange(just_tried, false) ? (errno = EAGAIN, -1) : op(more);
        if (rc >= 0) {
            if (!more) {
                release(dir);
                completed(event);
            } else if (!continuing) {
                owned_past_the_call(self);
            }
            return rc;
        }
        const int err = errno;
        if (err == EINTR)
            continue;
        if (event == ZMQ_POLLIN && err == EAGAIN)
            replies_since_commands = 0;
        // A load balancer that refuses a message's last frame has dropped
        // the message with its pipe: a retry would send that frame alone to
        // another peer.
        if (err == EAGAIN && continuing && !more && event == ZMQ_POLLOUT
            && drops_after_failed_frame)
            dontwait = true;
        if (err != EAGAIN || dontwait) {
            if (err == EAGAIN)
                give_up();
            else
                release(dir);
            after_op();
            if (err != EAGAIN)
                throw zmq::error_t(err);
            errno = EAGAIN;
            return -1;
        }
        // A failed non-blocking zmq_recv has already processed every pending
        // command (unthrottled, unlike send), so the fd holds no signal and
        // the next command brings a new edge. The ZMQ_EVENTS read is then
        // needed only to wake other waiters the call may have made ready.
        const bool edge_since_read = edges != edges_at_read;
        if ((event == ZMQ_POLLIN || (level_disagrees && !edge_since_read)) && waiters.empty()) {
            tell_watchers();
        } else {
            const refresh_result state = refresh();
            edges_at_read = edges;
            if (state.error != 0) {
                release(dir);
                throw zmq::error_t(state.error);
            }
            // The read may have processed the command the call was missing.
            if (state.events & event) {
                if (!std::exchange(level_disagrees, true) || edge_since_read)
                    continue;
                blind = true;
            }
        }
        if (passed(get_deadline())) {
            if (give_up())
                after_op();
            errno = EAGAIN;
            return -1;
        }
        const wake_reason why = wait_ready(
            self, event, std::exchange(blind, false) ? recheck_deadline(deadline) : deadline);
        if (why == wake_reason::timeout && !passed(deadline))
            continue;
        if (why == wake_reason::timeout || why == wake_reason::scope_timeout
            || why == wake_reason::cancelled) {
            if (give_up())
                after_op();
            throw_if_interrupted(why);
            errno = EAGAIN;
            return -1;
        }
    }
}

} // namespace zmq::green::detail
