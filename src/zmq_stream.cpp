#include <zmq/green/multipart.hpp>
#include <zmq/green/zmq_stream.hpp>

#include "loop_access.hpp"
#include "socket_core.hpp"

#include <boost/fiber/fiber.hpp>
#include <boost/fiber/operations.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace zmq::green {

namespace detail {

namespace {

// Messages a stream receives, and sends, per loop iteration at most.
constexpr int burst = 32;

// A user callback that may replace or drop itself while it runs (on_recv,
// close). Calling it copies nothing: a std::function copy per message cost a
// heap allocation for any lambda of more than two references. A replaced
// function lives on, in place, until the outermost call returns.
template<class Fn>
class callback_slot {
public:
    explicit operator bool() const noexcept { return fn_ != nullptr; }

    void set(Fn fn)
    {
        if (running_ == 0 && fn_ != nullptr && fn) {
            *fn_ = std::move(fn); // nothing runs it: no need for a new one
            return;
        }
        std::unique_ptr<Fn> next = fn ? std::make_unique<Fn>(std::move(fn)) : nullptr;
        if (running_ > 0 && fn_ != nullptr)
            retired_.push_back(std::move(fn_));
        fn_ = std::move(next);
    }

    // Only when set.
    template<class... Args>
    void operator()(Args&&... args)
    {
        Fn& fn = *fn_;
        struct call {
            callback_slot& slot;
            explicit call(callback_slot& s) : slot(s) { ++slot.running_; }
            ~call()
            {
                if (--slot.running_ == 0)
                    slot.retired_.clear();
            }
        } running{*this};
        fn(std::forward<Args>(args)...);
    }

private:
    std::unique_ptr<Fn> fn_;
    int running_ = 0;
    std::vector<std::unique_ptr<Fn>> retired_;
};

} // namespace

struct stream_state : std::enable_shared_from_this<stream_state> {
    stream_state(io_loop& l, socket_ref s) : loop(l), ref(s) { init(); }

    ~stream_state()
    {
        if (core != nullptr)
            core->release();
    }

    void init()
    {
        core = ref.core();
        if (core == nullptr || core->closed)
            throw zmq::error_t(ENOTSOCK);
        // Before touching the core: its reference count belongs to its thread.
        if (reactor::current() != &core->owner)
            throw thread_error("zmq::green::zmq_stream: the socket belongs to another thread");
        sendable = can_send(ref.get(zmq::sockopt::type));
        core->retain();
    }

    void register_handler()
    {
        std::weak_ptr<stream_state> weak = shared_from_this();
        loop.add_handler(
            ref,
            [weak](short events) {
                if (auto self = weak.lock())
                    self->handle_events(events);
            },
            0);
    }

    void check_thread(const char* what) const
    {
        if (!core->owner.on_owner_thread())
            throw thread_error(std::string("zmq::green::zmq_stream::") + what
                               + ": called from a thread that does not own the stream");
    }

    void check_open(const char* what) const
    {
        check_thread(what);
        if (is_closed)
            throw std::logic_error(std::string("zmq::green::zmq_stream::") + what
                                   + ": the stream is closed");
    }

    static void warn(const char* text) noexcept
    {
        std::fprintf(stderr, "zmq::green::zmq_stream: %s\n", text);
    }

    bool receiving() const noexcept { return static_cast<bool>(recv_cb); }
    bool sending() const noexcept { return !queue.empty(); }

    // The loop checks the level for us: re-checking pending events on every
    // interest change (pyzmq's PR #1075) comes for free.
    void rebuild_io_state() noexcept
    {
        if (is_closed)
            return;
        const auto state = static_cast<short>((receiving() ? ZMQ_POLLIN : 0)
                                              | (sending() ? ZMQ_POLLOUT : 0));
        try {
            loop.update_handler(ref, state);
        } catch (...) {
            // The loop already dropped the handler: the socket went away.
        }
    }

    // Validates the socket before a deferred dispatch touches it.
    bool socket_gone() noexcept
    {
        if (is_closed)
            return true;
        if (core->closed) {
            warn("socket closed behind the stream's back; closing the stream");
            close(std::nullopt);
            return true;
        }
        return false;
    }

    void handle_events(short events) noexcept
    {
        auto keep = shared_from_this();
        if (is_closed) {
            warn("got events for a closed stream");
            return;
        }
        if (events & ZMQ_POLLERR) {
            // The loop reports a closed socket or a terminated context this way.
            warn(core->closed ? "got events for a stream after its socket was closed"
                              : "got events for a stream after terminating its context");
            close(std::nullopt);
            return;
        }
        // Bursts, not one message per loop iteration: the non-blocking call
        // is the readiness check, so the loop's ZMQ_EVENTS read and yield are
        // paid once per burst (one send per iteration held a stream to 0.18 M
        // msg/s inproc). Bounded, so that the other handlers and fibers still
        // get their turn. A burst cut short by its bound leaves the socket
        // ready as far as anyone knows: the loop's next call comes without a
        // ZMQ_EVENTS read (a third of a busy stream's syscalls).
        short still_ready = 0;
        auto run = [&](short event, auto wanted, auto step) {
            const burst_end end = run_burst(wanted, step);
            if (end == burst_end::bound)
                still_ready = static_cast<short>(still_ready | event);
            return end != burst_end::closed;
        };
        if ((events & ZMQ_POLLIN)
            && !run(ZMQ_POLLIN, &stream_state::receiving, &stream_state::handle_recv))
            return;
        // Whatever the level said of POLLOUT: the replies the receive
        // callbacks just queued go out now. A send that fails costs no
        // syscall; the level read that would come first costs two.
        if (((events & ZMQ_POLLOUT) || sending())
            && !run(ZMQ_POLLOUT, &stream_state::sending, &stream_state::handle_send))
            return;
        rebuild_io_state();
        if (still_ready != 0)
            loop_access::presume_ready(loop, *core, still_ready);
    }

    enum class burst_end { closed, done, bound };

    // Up to `burst` calls of step while wanted() and step makes progress,
    // and until a callback flushes: pyzmq's `_flushed`, which holds the
    // loop's dispatch of this stream back until the next iteration, and
    // which flush() itself ignores. A REQ or REP socket sends and receives
    // by turns, and the loop's ZMQ_EVENTS read vouches only for a burst's
    // first step: a later one fails with EFSM (a REP whose callback queued
    // the reply, a REQ with requests queued behind the one in flight). That
    // is no error: the turn has passed, the burst ends, and a message to send
    // stays queued.
    burst_end run_burst(bool (stream_state::*wanted)() const noexcept,
                        bool (stream_state::*step)() noexcept)
    {
        for (int i = 0; i < burst; ++i)
            if (is_closed || flushed || loop_access::ending_run(loop)
                || (i > 0 && loop_access::stopping(loop))
                || !(this->*wanted)() || !(this->*step)())
                return is_closed ? burst_end::closed : burst_end::done;
        return is_closed ? burst_end::closed : burst_end::bound;
    }

    // Receives one message and hands it to the callback. False when there
    // was none to receive.
    bool handle_recv() noexcept
    {
        if (socket_gone())
            return false;
        // The frames go into the storage of the previous message: a vector
        // allocated per message cost a stream more than the receive itself.
        // A callback that receives again (flush) finds no spare and
        // allocates; one that keeps the vector keeps it.
        zmq_stream::message msg = std::move(spare);
        msg.clear();
        struct give_back {
            zmq_stream::message& msg;
            zmq_stream::message& spare;
            ~give_back()
            {
                if (spare.capacity() == 0) {
                    msg.clear();
                    spare = std::move(msg);
                }
            }
        } keep_storage{msg, spare};
        try {
            if (!recv_multipart(ref, std::back_inserter(msg), recv_flags::dontwait))
                return false; // nothing (more) to receive
        } catch (const zmq::error_t& e) {
            if (e.num() == EFSM)
                return false; // the turn has passed (run_burst)
            if (e.num() == ETERM || e.num() == ENOTSOCK) {
                warn("the socket went away while a receive was pending; closing the stream");
                close(std::nullopt);
            } else {
                loop.handle_exception(std::current_exception());
            }
            return false;
        }
        if (!recv_cb)
            return true; // only flush receives without a callback: the message is dropped
        try {
            recv_cb(msg);
        } catch (...) {
            loop.handle_exception(std::current_exception());
        }
        return true;
    }

    // Sends the first queued message. False when it stays queued (the
    // socket cannot take it now) or the stream closed.
    bool handle_send() noexcept
    {
        if (socket_gone())
            return false;
        if (queue.empty())
            return false; // a stale POLLOUT (pyzmq #379)
        zmq_stream::message msg = std::move(queue.front());
        queue.pop_front();
        // Before the send, which may yield: an edge meanwhile may bring room.
        const std::uint64_t edges_before = core->edges;
        send_status status;
        try {
            bool sent;
            if (send_cb) {
                // The callback gets the message as it was queued. Cheap:
                // zmq_msg_copy shares large bodies.
                zmq_stream::message copies(msg.size());
                for (std::size_t i = 0; i < msg.size(); ++i)
                    copies[i].copy(msg[i]);
                sent = static_cast<bool>(send_multipart(ref, copies, send_flags::dontwait));
            } else {
                sent = static_cast<bool>(send_multipart(ref, msg, send_flags::dontwait));
            }
            if (!sent) {
                // Readiness went stale, or never held for this message
                // (ROUTER_MANDATORY, XPUB_NODROP): try again once a signal
                // may have made room.
                queue.push_front(std::move(msg));
                send_refused = true;
                loop_access::send_refused(loop, *core, edges_before);
                return false;
            }
            if (std::exchange(send_refused, false))
                loop_access::send_taken(loop, *core);
        } catch (const zmq::error_t& e) {
            if (e.num() == EFSM) {
                queue.push_front(std::move(msg)); // the turn has passed (run_burst)
                return false;
            }
            status.error = e.num();
            if (e.num() == ETERM || e.num() == ENOTSOCK) {
                // Tell the sender, then give up on the dead socket.
                run_send_cb(msg, status);
                close(std::nullopt);
                return false;
            }
        }
        run_send_cb(msg, status);
        return !is_closed;
    }

    void run_send_cb(const zmq_stream::message& msg, const send_status& status) noexcept
    {
        if (!send_cb)
            return;
        try {
            send_cb(msg, status);
        } catch (...) {
            loop.handle_exception(std::current_exception());
        }
    }

    // A flush in progress, on the stack of the fiber that called it.
    struct flush_frame {
        boost::fibers::fiber::id fiber;
        int depth = 1; // among this fiber's flushes of the stream
        bool refused = false; // a flush that the callback it runs now made at the cap
    };

    flush_frame* innermost_flush(boost::fibers::fiber::id fiber) const noexcept
    {
        const auto it = std::find_if(flushes.rbegin(), flushes.rend(),
                                     [&](const flush_frame* f) { return f->fiber == fiber; });
        return it != flushes.rend() ? *it : nullptr;
    }

    std::size_t flush(short events, std::size_t limit)
    {
        check_open("flush");
        // A callback that flushes its own stream nests a flush per message,
        // and a fiber's stack would overflow long before the messages end.
        // Past the cap the nested flush handles nothing: the messages wait
        // for the flush below it, which loops, or the loop's next turn. The
        // nesting is the calling fiber's: a callback may park mid-flush, and
        // another fiber's flush then nests on nothing.
        flush_frame frame{boost::this_fiber::get_id()};
        if (flush_frame* below = innermost_flush(frame.fiber)) {
            frame.depth = below->depth + 1;
            // Only a callback's first flush, though: one that flushes again
            // waits for something (a REQ for its reply) that only a deeper
            // flush can bring, and refused it would spin for ever. pyzmq
            // recurses for every flush; past the limit, as Python's recursion
            // limit does, it fails.
            if (frame.depth > max_flush_depth && !std::exchange(below->refused, true))
                return 0;
            if (frame.depth > flush_depth_limit)
                throw std::runtime_error(
                    "zmq::green::zmq_stream::flush: nested " + std::to_string(flush_depth_limit)
                    + " deep in the stream's own callbacks, each flushing again after its first "
                      "flush was refused (a callback waiting in flush for a message whose "
                      "callback waits in flush in turn); the fiber's stack would overflow");
        }
        auto keep = shared_from_this(); // a callback may destroy the stream
        flushes.push_back(&frame);
        struct leave_frame {
            std::vector<flush_frame*>& flushes;
            flush_frame* frame;
            ~leave_frame() { flushes.erase(std::find(flushes.begin(), flushes.end(), frame)); }
        } frame_guard{flushes, &frame};
        // Without a callback flush receives to drop, as in pyzmq. But one that
        // a callback removes mid-flush pauses receiving, as it does anywhere
        // else: the rest stays in libzmq, where pyzmq dropped it.
        const bool drop = !receiving();
        auto wanted = [&] {
            return static_cast<short>(((drop || receiving()) ? (events & ZMQ_POLLIN) : 0)
                                      | (sending() ? (events & ZMQ_POLLOUT) : 0));
        };
        auto level = [&]() -> short {
            if (core->closed)
                return 0;
            const refresh_result r = core->refresh();
            return r.error != 0 ? 0 : static_cast<short>(r.events);
        };
        std::size_t count = 0;
        short flag = wanted();
        if (flag == 0)
            return 0;
        short ev = static_cast<short>(level() & flag);
        while (ev != 0 && (limit == 0 || count < limit)) {
            // A step that handles nothing (a turn passed, a stale event) ends
            // the flush rather than spin.
            bool handled = false;
            if (ev & ZMQ_POLLIN) {
                frame.refused = false;
                if (handle_recv())
                    ++count, handled = true;
                if (is_closed)
                    break;
            }
            if ((ev & ZMQ_POLLOUT) && sending() && (limit == 0 || count < limit)) {
                frame.refused = false;
                if (handle_send())
                    ++count, handled = true;
                if (is_closed)
                    break;
            }
            if (!handled)
                break;
            flag = wanted();
            ev = static_cast<short>(level() & flag);
        }
        // The mark is set exactly while its reset is pending: a flush whose
        // callback parked over the loop's round of callbacks must schedule
        // another, not trust what it saw on entry.
        if (count > 0 && !std::exchange(flushed, true)) {
            std::weak_ptr<stream_state> weak = keep;
            loop.add_callback([weak] {
                if (auto self = weak.lock())
                    self->flushed = false;
            });
        }
        rebuild_io_state();
        return count;
    }

    void close(std::optional<int> linger) noexcept
    {
        if (is_closed)
            return;
        is_closed = true;
        auto keep = shared_from_this();
        if (core->closed)
            warn("unregistering a stream after closing its socket");
        loop.remove_handler(ref);
        if (owned.handle() != nullptr && !core->closed) {
            try {
                if (linger)
                    owned.set(zmq::sockopt::linger, *linger);
            } catch (...) {
                // Closing matters more than the linger value.
            }
        }
        owned.close();
        if (close_cb) {
            auto cb = std::move(close_cb);
            try {
                cb();
            } catch (...) {
                loop.handle_exception(std::current_exception());
            }
        }
        // The callbacks often capture the stream: let those cycles go.
        recv_cb.set(nullptr);
        send_cb.set(nullptr);
    }

    io_loop& loop;
    socket_t owned;
    socket_ref ref;
    socket_core* core = nullptr;
    bool sendable = true; // the socket's type can send
    zmq_stream* facade = nullptr;
    callback_slot<zmq_stream::recv_callback> recv_cb;
    callback_slot<zmq_stream::send_callback> send_cb;
    zmq_stream::close_callback close_cb;
    std::deque<zmq_stream::message> queue;
    zmq_stream::message spare; // see handle_recv
    bool flushed = false;
    bool send_refused = false; // the loop holds POLLOUT back (loop_access::send_refused)
    bool is_closed = false;
    static constexpr int max_flush_depth = 16;
    // Some 400 bytes of stack a level with a small callback (3.4 KB under
    // ASan): inside the default 128 KiB fiber stack either way.
    static constexpr int flush_depth_limit = 32;
    std::vector<flush_frame*> flushes; // in progress, of every fiber
};

} // namespace detail

zmq_stream::zmq_stream(socket_t&& socket, io_loop& loop)
    : s_(std::make_shared<detail::stream_state>(loop, socket_ref(socket)))
{
    s_->facade = this;
    s_->register_handler();
    // Taken only now: if the checks above throw, the caller keeps its socket.
    s_->owned = std::move(socket);
}

zmq_stream::zmq_stream(socket_ref socket, io_loop& loop)
    : s_(std::make_shared<detail::stream_state>(loop, socket))
{
    s_->facade = this;
    s_->register_handler();
}

zmq_stream::~zmq_stream()
{
    // On another thread this terminates, naming the thread_error: what the
    // stream holds belongs to its own thread.
    s_->check_thread("~zmq_stream");
    s_->facade = nullptr;
    s_->close(std::nullopt);
}

void zmq_stream::on_recv(recv_callback fn)
{
    s_->check_open("on_recv");
    s_->recv_cb.set(std::move(fn));
    s_->rebuild_io_state();
}

void zmq_stream::on_recv_strings(recv_string_callback fn)
{
    if (!fn)
        return on_recv(nullptr);
    on_recv([fn = std::move(fn)](message& msg) {
        std::vector<std::string> parts;
        parts.reserve(msg.size());
        for (auto& m : msg)
            parts.push_back(m.to_string());
        fn(parts);
    });
}

void zmq_stream::on_recv_stream(recv_stream_callback fn)
{
    if (!fn)
        return on_recv(nullptr);
    std::weak_ptr<detail::stream_state> weak = s_;
    on_recv([weak, fn = std::move(fn)](message& msg) {
        auto self = weak.lock();
        if (self && self->facade != nullptr)
            fn(*self->facade, msg);
    });
}

void zmq_stream::on_send(send_callback fn)
{
    s_->check_open("on_send");
    s_->send_cb.set(std::move(fn));
}

void zmq_stream::on_send_stream(send_stream_callback fn)
{
    if (!fn)
        return on_send(nullptr);
    std::weak_ptr<detail::stream_state> weak = s_;
    on_send([weak, fn = std::move(fn)](const message& msg, const send_status& status) {
        auto self = weak.lock();
        if (self && self->facade != nullptr)
            fn(*self->facade, msg, status);
    });
}

void zmq_stream::send(zmq::message_t msg, send_callback fn)
{
    message parts;
    parts.push_back(std::move(msg));
    send_multipart(std::move(parts), std::move(fn));
}

void zmq_stream::send_multipart(message msg, send_callback fn)
{
    s_->check_open("send_multipart");
    // As libzmq's send: queued, it would wait for a POLLOUT that never comes.
    if (!s_->sendable)
        throw zmq::error_t(ENOTSUP);
    if (msg.empty())
        throw std::invalid_argument("zmq::green::zmq_stream::send_multipart: a message needs at "
                                    "least one frame");
    s_->queue.push_back(std::move(msg));
    if (fn)
        s_->send_cb.set(std::move(fn));
    s_->rebuild_io_state();
}

void zmq_stream::send_string(const std::string& str, send_callback fn)
{
    send(zmq::message_t(str.data(), str.size()), std::move(fn));
}

std::size_t zmq_stream::flush(short events, std::size_t limit)
{
    s_->check_thread("flush");
    if (events & ~(ZMQ_POLLIN | ZMQ_POLLOUT))
        throw std::invalid_argument("zmq::green::zmq_stream::flush: events must be ZMQ_POLLIN "
                                    "and/or ZMQ_POLLOUT");
    return s_->flush(events, limit);
}

void zmq_stream::set_close_callback(close_callback fn)
{
    s_->check_thread("set_close_callback");
    s_->close_cb = std::move(fn);
}

void zmq_stream::close(std::optional<int> linger)
{
    s_->check_thread("close");
    s_->close(linger);
}

bool zmq_stream::closed()
{
    s_->check_thread("closed");
    if (!s_->is_closed && s_->core->closed) {
        detail::stream_state::warn("socket closed behind the stream's back; closing the stream");
        s_->close(std::nullopt);
    }
    return s_->is_closed;
}

bool zmq_stream::receiving() const noexcept { return s_->receiving(); }
bool zmq_stream::sending() const noexcept { return s_->sending(); }
std::size_t zmq_stream::queued() const noexcept { return s_->queue.size(); }

socket_ref zmq_stream::socket() const
{
    if (s_->is_closed)
        throw std::logic_error("zmq::green::zmq_stream::socket: the stream is closed");
    return s_->ref;
}

io_loop& zmq_stream::loop() const noexcept { return s_->loop; }

} // namespace zmq::green
