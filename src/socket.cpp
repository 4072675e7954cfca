#include <zmq/green/poll.hpp>
#include <zmq/green/socket.hpp>

#include "socket_core.hpp"
#include "system_stack.hpp"

#include <boost/fiber/fss.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

namespace zmq::green {

namespace detail {

socket_core::socket_core(std::shared_ptr<reactor> r, std::shared_ptr<context_core> c, void* h,
                         int f)
    : owner_ref(std::move(r)), owner(*owner_ref), ctx(std::move(c)), handle(h), fd(f)
{
}

void socket_core::on_ready(std::uint32_t) noexcept
{
    ++edges;
    if (!waiters.empty())
        owner.count_fd_wakeups(refresh(nullptr, true).woken);
    else
        tell_watchers();
}

refresh_result socket_core::refresh(const change_watch* reader, bool signalled) noexcept
{
    tell_watchers(reader);
    refresh_result r;
    int events = 0;
    size_t size = sizeof events;
    int rc;
    do {
        rc = zmq_getsockopt(handle, ZMQ_EVENTS, &events, &size);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        // Everyone wakes and meets the error in their own call.
        r.error = errno;
        r.woken = owner.wake_matching(waiters, ZMQ_POLLIN | ZMQ_POLLOUT | ZMQ_POLLERR | any_change);
        return r;
    }
    r.events = events;
    // Only a signal wakes any_change waiters: woken by every level read, two
    // of them that read on waking (or one and an io_loop handler) would wake
    // each other for ever.
    const short wake = static_cast<short>(events | (signalled ? any_change : 0));
    if (wake != 0)
        r.woken = owner.wake_matching(waiters, wake);
    return r;
}

void socket_core::refresh_stale_reply_count() noexcept
{
    // The peer reports what it has read once every `lwm` messages, lwm being
    // about half the HWM and at most 1024 below it (libzmq's pipe), so once
    // processed the count lags by at most lwm - 1 replies, and each reply
    // sent since adds one. Processing again after a quarter of the HWM (of
    // 2048 at most) keeps a reply the peer made room for from being dropped.
    int hwm = 0;
    size_t size = sizeof hwm;
    if (zmq_getsockopt(handle, ZMQ_SNDHWM, &hwm, &size) != 0 || hwm <= 0)
        return; // unlimited; or the receive meets the error
    if (replies_since_commands >= static_cast<unsigned>(std::max(1, std::min(hwm, 2048) / 4))) {
        (void)refresh();
        replies_since_commands = 0;
    }
}

bool socket_core::acquire(direction& dir, clock::time_point deadline)
{
    for (;;) {
        // The owner may be busy elsewhere in the middle of a message, and a
        // context shutdown must still reach this fiber: it waits on the
        // socket for an error too. Its stop command brings an edge only if
        // no signal is pending: with nobody else waiting, consume it here.
        if (waiters.empty()) {
            const refresh_result state = refresh();
            if (state.error != 0)
                throw zmq::error_t(state.error);
        }
        park_slot slot;
        slot.deadline = deadline;
        wake_reason why;
        {
            wait_node turn(slot, 0);
            wait_node error(slot, ZMQ_POLLERR);
            dir.queue.push_back(turn);
            waiters.push_back(error);
            why = owner.park(slot);
        }
        if (why == wake_reason::closed)
            throw_closed();
        throw_if_interrupted(why);
        if (why != wake_reason::event)
            return false;
        if (dir.owner == slot.ctx)
            return true;
        // Not handed the direction: a ZMQ_EVENTS read failed. The owner
        // finishes or fails its own message.
        const refresh_result state = refresh();
        if (state.error != 0)
            throw zmq::error_t(state.error);
    }
}

void socket_core::release(direction& dir) noexcept
{
    dir.owner = nullptr;
    while (!dir.queue.empty()) {
        park_slot& next = *dir.queue.front().slot;
        dir.queue.pop_front();
        if (owner.wake(next, wake_reason::event)) {
            dir.owner = next.ctx;
            return;
        }
    }
}

wake_reason socket_core::wait_ready(boost::fibers::context* self, short event,
                                    clock::time_point deadline) noexcept
{
    park_slot slot;
    slot.ctx = self;
    slot.deadline = deadline;
    wait_node node(slot, event);
    waiters.push_back(node);
    owner.wait_started();
    const wake_reason why = owner.park(slot);
    owner.wait_ended();
    return why;
}

clock::time_point socket_core::deadline_from_option(int timeo_option) const noexcept
{
    int ms = -1;
    size_t size = sizeof ms;
    if (zmq_getsockopt(handle, timeo_option, &ms, &size) != 0)
        ms = -1; // the call itself will report what is wrong
    return deadline_after(std::chrono::milliseconds{ms});
}

void socket_core::abandon(boost::fibers::context* caller) noexcept
{
    if (closed)
        return; // the message went with the socket
    if (recv_dir.owner == caller) {
        // libzmq delivers messages whole, so the rest is here: drop it
        // rather than hand it to the next receiver as a message of its own.
        zmq_msg_t rest;
        zmq_msg_init(&rest);
        while (zmq_msg_recv(&rest, handle, ZMQ_DONTWAIT) >= 0 && zmq_msg_more(&rest)) {
        }
        zmq_msg_close(&rest);
        release(recv_dir);
        completed(ZMQ_POLLIN);
    }
    if (send_dir.owner == caller) {
        // Without a last frame the next sender's frames would join them.
        end_send();
        release(send_dir);
        completed(ZMQ_POLLOUT);
    }
}

namespace {

// The sockets a fiber has owned a direction of between two frames. Pruned
// as it takes another, emptied when it ends.
struct mid_messages {
    explicit mid_messages(boost::fibers::context* ctx) noexcept : self(ctx) {}
    mid_messages(const mid_messages&) = delete;
    mid_messages& operator=(const mid_messages&) = delete;

    boost::fibers::context* const self;
    std::vector<socket_core*> cores; // each retained

    static bool still_owned(const socket_core& core, const boost::fibers::context* ctx) noexcept
    {
        return core.send_dir.owner == ctx || core.recv_dir.owner == ctx;
    }

    ~mid_messages()
    {
        for (socket_core* core : cores) {
            if (core->touchable_here())
                core->abandon(self); // a direction self still owns, if any
            core->release();
        }
    }
};

boost::fibers::fiber_specific_ptr<mid_messages> fiber_mid_messages;

} // namespace

void socket_core::owned_past_the_call(boost::fibers::context* self)
{
    // Boost.Fiber runs no cleanup when a thread's main fiber ends: a message
    // it leaves open stays open, as a thread's would.
    if (self->is_context(boost::fibers::type::main_context))
        return;
    try {
        keep_until_the_end(self);
    } catch (...) {
        // Unlisted, the direction would stay with the fiber past its end:
        // end the message now, and report the failure.
        abandon(self);
        throw;
    }
}

void socket_core::keep_until_the_end(boost::fibers::context* self)
{
    mid_messages* m = fiber_mid_messages.get();
    if (m == nullptr) {
        auto fresh = std::make_unique<mid_messages>(self);
        fiber_mid_messages.reset(fresh.get());
        m = fresh.release();
    }
    bool listed = false;
    auto& cores = m->cores;
    for (auto it = cores.begin(); it != cores.end();) {
        if (*it == this) {
            listed = true;
            ++it;
        } else if (!mid_messages::still_owned(**it, self)) {
            (*it)->release();
            it = cores.erase(it);
        } else {
            ++it;
        }
    }
    if (!listed) {
        cores.push_back(this);
        retain();
    }
}

void socket_core::throw_closed() const { throw zmq::error_t(ENOTSOCK); }

void socket_core::close() noexcept
{
    if (closed)
        return;
    closed = true;
    for (wait_list* list : {&waiters, &send_dir.queue, &recv_dir.queue}) {
        while (!list->empty()) {
            park_slot& slot = *list->front().slot;
            list->pop_front();
            owner.wake(slot, wake_reason::closed);
        }
    }
    tell_watchers();
    owner.remove_socket(*this);
    [[maybe_unused]] const int rc = zmq_close(handle);
    handle = nullptr;
    ctx->socket_closed();
}

namespace {

zmq::error_t not_a_socket() { return zmq::error_t(ENOTSOCK); }

// Out of line, so that the check on every call stays a compare and a branch.
[[noreturn]] __attribute__((noinline, cold)) void throw_foreign_thread()
{
    throw thread_error("zmq::green socket used from a thread that does not own it: "
                       "a green socket belongs to the thread that created it");
}

// The core of an open socket (nullptr once closed), if this thread owns it.
inline __attribute__((always_inline)) socket_core* owned(socket_core* core)
{
    if (core != nullptr && reactor::current() != &core->owner)
        throw_foreign_thread();
    return core;
}

} // namespace

void* socket_base::checked_handle() const
{
    socket_core* core = owned(core_);
    // A closed socket has no handle: libzmq reports ENOTSOCK, as for a
    // closed cppzmq socket.
    return core != nullptr ? core->handle : nullptr;
}

void socket_base::events_read() const noexcept { core_->after_op(); }

void socket_base::end_message(boost::fibers::context* caller) noexcept
{
    if (core_ != nullptr && reactor::current() == &core_->owner)
        core_->abandon(caller);
}

void* socket_base::handle() const noexcept { return core_ ? core_->handle : nullptr; }

#define ZMQ_GREEN_ENDPOINT_CALL(name)                                                          \
    void socket_base::name(const char* addr)                                                   \
    {                                                                                          \
        void* h = checked_handle();                                                            \
        if (addr == nullptr) /* libzmq would assert */                                         \
            throw zmq::error_t(EINVAL);                                                        \
        int rc = -1;                                                                           \
        int err = 0; /* after_op's ZMQ_EVENTS read would overwrite errno */                    \
        on_system_stack([&] {                                                                  \
            rc = zmq_##name(h, addr);                                                          \
            err = errno;                                                                       \
        });                                                                                    \
        /* Processing commands here can consume a signal fibers wait for. */                   \
        if (core_) {                                                                           \
            core_->after_op();                                                                 \
            if (rc == 0 && std::strncmp(addr, "inproc://", 9) != 0)                            \
                core_->lockstep_inproc = false;                                                \
        }                                                                                      \
        if (rc != 0)                                                                           \
            throw zmq::error_t(err);                                                           \
    }

ZMQ_GREEN_ENDPOINT_CALL(bind)
ZMQ_GREEN_ENDPOINT_CALL(unbind)
ZMQ_GREEN_ENDPOINT_CALL(connect)
ZMQ_GREEN_ENDPOINT_CALL(disconnect)
#undef ZMQ_GREEN_ENDPOINT_CALL

// Inline: only this file calls it, on every operation.
inline socket_core& socket_base::checked_core() const
{
    socket_core* core = owned(core_);
    if (core == nullptr)
        throw not_a_socket();
    return *core;
}

namespace {

// Every operation is inlined into the socket_base and the message_frames
// member that run it, so that a lone call keeps its caller in a register.
#define ZMQ_GREEN_INLINE inline __attribute__((always_inline))

// A send: sndmore decides whether the message continues.
template<class Call>
ZMQ_GREEN_INLINE int green_send(socket_core& core, boost::fibers::context*& caller,
                                send_flags flags, Call call)
{
    const int f = static_cast<int>(flags);
    return core.perform(core.send_dir, ZMQ_POLLOUT, f & ZMQ_DONTWAIT, ZMQ_SNDTIMEO, caller,
                        [&](bool& more) {
                            more = f & ZMQ_SNDMORE;
                            return call(f | ZMQ_DONTWAIT);
                        });
}

// A receive: call sets more from the frame it got.
template<class Call>
ZMQ_GREEN_INLINE int green_recv(socket_core& core, boost::fibers::context*& caller,
                                recv_flags flags, Call call)
{
    const int f = static_cast<int>(flags);
    return core.perform(core.recv_dir, ZMQ_POLLIN, f & ZMQ_DONTWAIT, ZMQ_RCVTIMEO, caller,
                        [&](bool& more) { return call(f | ZMQ_DONTWAIT, more); });
}

// The four operations; a socket_base call is a message of its own.
ZMQ_GREEN_INLINE send_result_t send_buffer(socket_core& core, boost::fibers::context*& caller,
                                           const_buffer buf, send_flags flags)
{
    const int rc = green_send(core, caller, flags, [&](int f) {
        return zmq_send(core.handle, buf.data(), buf.size(), f);
    });
    if (rc < 0)
        return {};
    return static_cast<size_t>(rc);
}

ZMQ_GREEN_INLINE send_result_t send_message(socket_core& core, boost::fibers::context*& caller,
                                            message_t& msg, send_flags flags)
{
    const int rc = green_send(core, caller, flags, [&](int f) {
        return zmq_msg_send(msg.handle(), core.handle, f);
    });
    if (rc < 0)
        return {};
    return static_cast<size_t>(rc);
}

ZMQ_GREEN_INLINE recv_buffer_result_t recv_buffer(socket_core& core,
                                                  boost::fibers::context*& caller,
                                                  mutable_buffer buf, recv_flags flags,
                                                  bool& more_frames)
{
    const int rc = green_recv(core, caller, flags, [&](int f, bool& more) {
        const int n = zmq_recv(core.handle, buf.data(), buf.size(), f);
        if (n >= 0) {
            int rcvmore = 0;
            size_t size = sizeof rcvmore;
            zmq_getsockopt(core.handle, ZMQ_RCVMORE, &rcvmore, &size);
            more = more_frames = rcvmore != 0;
        }
        return n;
    });
    if (rc < 0)
        return {};
    return recv_buffer_size{std::min(static_cast<size_t>(rc), buf.size()),
                            static_cast<size_t>(rc)};
}

ZMQ_GREEN_INLINE recv_result_t recv_message(socket_core& core, boost::fibers::context*& caller,
                                            message_t& msg, recv_flags flags)
{
    const int rc = green_recv(core, caller, flags, [&](int f, bool& more) {
        const int n = zmq_msg_recv(msg.handle(), core.handle, f);
        more = n >= 0 && msg.more();
        return n;
    });
    if (rc < 0)
        return {};
    return static_cast<size_t>(rc);
}

#undef ZMQ_GREEN_INLINE

} // namespace

send_result_t socket_base::send(const_buffer buf, send_flags flags)
{
    boost::fibers::context* caller = nullptr;
    return send_buffer(checked_core(), caller, buf, flags);
}

send_result_t socket_base::send(message_t& msg, send_flags flags)
{
    boost::fibers::context* caller = nullptr;
    return send_message(checked_core(), caller, msg, flags);
}

recv_buffer_result_t socket_base::recv(mutable_buffer buf, recv_flags flags)
{
    boost::fibers::context* caller = nullptr;
    bool more = false;
    return recv_buffer(checked_core(), caller, buf, flags, more);
}

recv_result_t socket_base::recv(message_t& msg, recv_flags flags)
{
    boost::fibers::context* caller = nullptr;
    return recv_message(checked_core(), caller, msg, flags);
}

message_frames::message_frames(socket_base& socket) noexcept
    : socket_(socket),
      held_(socket.core_ != nullptr && reactor::current() == &socket.core_->owner ? socket.core_
                                                                                  : nullptr)
{
    if (held_ != nullptr)
        held_->retain();
}

message_frames::~message_frames()
{
    if (open_)
        socket_.end_message(caller_);
    if (held_ != nullptr)
        held_->release();
}

send_result_t message_frames::send(const_buffer buf, send_flags flags)
{
    open_ = false;
    const auto r = send_buffer(socket_.checked_core(), caller_, buf, flags);
    open_ = r && (flags & send_flags::sndmore) != send_flags::none;
    return r;
}

send_result_t message_frames::send(message_t& msg, send_flags flags)
{
    open_ = false;
    const auto r = send_message(socket_.checked_core(), caller_, msg, flags);
    open_ = r && (flags & send_flags::sndmore) != send_flags::none;
    return r;
}

recv_buffer_result_t message_frames::recv(mutable_buffer buf, recv_flags flags)
{
    open_ = false;
    bool more = false;
    const auto r = recv_buffer(socket_.checked_core(), caller_, buf, flags, more);
    open_ = r && more;
    return r;
}

recv_result_t message_frames::recv(message_t& msg, recv_flags flags)
{
    open_ = false;
    const auto r = recv_message(socket_.checked_core(), caller_, msg, flags);
    open_ = r && msg.more();
    return r;
}

short socket_base::poll(short events, std::chrono::milliseconds timeout)
{
    zmq_pollitem_t item{checked_handle(), 0, events, 0};
    if (item.socket == nullptr)
        throw not_a_socket();
    return green::poll(&item, 1, timeout) > 0 ? item.revents : 0;
}

} // namespace detail

socket_t::socket_t(const std::shared_ptr<detail::context_core>& context, int type)
{
    void* ctx = context ? context->handle : nullptr;
    if (ctx == nullptr)
        throw zmq::error_t(EFAULT); // as zmq_socket on a closed context
    const auto& r = hub::current().reactor();
    void* h = zmq_socket(ctx, type);
    if (h == nullptr)
        throw zmq::error_t();
    int fd = -1;
    size_t size = sizeof fd;
    if (zmq_getsockopt(h, ZMQ_FD, &fd, &size) != 0) {
        const int err = errno;
        zmq_close(h);
        throw zmq::error_t(err);
    }
    auto* core = new detail::socket_core(r, context, h, fd);
    core->lockstep_inproc = type == ZMQ_REQ || type == ZMQ_REP;
    core->counts_replies = type == ZMQ_REP;
    core->drops_after_failed_frame = type == ZMQ_PUSH || type == ZMQ_DEALER || type == ZMQ_REQ;
    try {
        r->add_socket(*core);
    } catch (...) {
        zmq_close(h);
        core->closed = true;
        core->release();
        throw;
    }
    core->ctx->socket_opened();
    core_ = core;
}

socket_t::operator void*() { return checked_handle(); }

socket_t::operator void const*() const { return checked_handle(); }

void socket_t::check_replaceable() const
{
    if (core_ != nullptr && !core_->touchable_here())
        throw thread_error("zmq::green::socket_t: assigned to on a thread that does not own the "
                           "socket it holds, which would be lost open");
}

void socket_t::close() noexcept
{
    if (core_ == nullptr)
        return;
    if (!core_->touchable_here()) {
        // Its hub's structures cannot be touched from here, and a destructor
        // must not throw: say so and leave the socket open, and owned, so
        // that its own thread can still close it.
        std::fprintf(stderr,
                     "zmq::green: socket_t closed on a thread that does not own it; "
                     "leaving it open (close sockets on the thread that created them)\n");
        return;
    }
    detail::socket_core* core = std::exchange(core_, nullptr);
    core->close();
    core->release();
}

} // namespace zmq::green
