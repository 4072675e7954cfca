// A seeded randomized torture: on one hub, fibers drive socket pairs of every
// pattern, over inproc and tcp, in every blocking style (blocking, dontwait,
// timeouts, multipart frame by frame, poll, poller_t, socket poll, zmq_stream
// on an io_loop, monitor_t), while a seed may close a pair under its waiters,
// or shut down, destroy or close the context from a fiber or another thread.
// Every fiber must end, only the documented errors may escape, and every
// message of a pair nothing broke arrives exactly once, in order per sender.
// ZMQ_GREEN_TORTURE_FIRST and ZMQ_GREEN_TORTURE_SEEDS pick the seeds.
#include "stress.hpp"

#include <array>
#include <atomic>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

using namespace stress::torture;


enum class kind { pair, pushpull, dealer_router, pubsub, reqrep };
const char* kind_name(kind k)
{
    switch (k) {
    case kind::pair: return "pair";
    case kind::pushpull: return "pushpull";
    case kind::dealer_router: return "dealer_router";
    case kind::pubsub: return "pubsub";
    case kind::reqrep: return "reqrep";
    }
    return "?";
}

bool allowed(const zmq::error_t& e, kind k)
{
    return e.num() == ETERM || e.num() == ENOTSOCK || (k == kind::reqrep && e.num() == EFSM);
}

struct tracked {
    std::uint32_t index = 0;
    kind k;
    bool tcp;
    bool stream = false; // received by a zmq_stream on an io_loop
    green::socket_t a;   // sends
    green::socket_t b;   // receives
    int senders = 1;
    int receivers = 1;
    int per_sender = 0;
    int senders_done = 0;
    int receivers_done = 0;
    std::vector<std::uint32_t> next; // per sender
    std::uint64_t received = 0;
    bool broken = false; // closed by the torture
};

struct world {
    std::uint32_t seed;
    std::mt19937 rng;
    green::context_t ctx;
    std::vector<std::unique_ptr<tracked>> pairs;
    std::vector<green::socket_t> chaos; // untracked sockets, for the chaos fibers
    bool shut = false;                  // the context was shut down, destroyed or closed
    int slots = 0;
    std::vector<std::string> failures;

    explicit world(std::uint32_t s) : seed(s), rng(s) {}

    int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
    bool chance(int percent) { return pick(0, 99) < percent; }
    int slot() { return slots++; }
    void fail(const std::string& what) { failures.push_back(what); }
    void unexpected(const char* where)
    {
        try {
            throw;
        } catch (const zmq::error_t& e) {
            fail(std::string(where) + ": zmq::error_t " + std::to_string(e.num()) + " " + e.what());
        } catch (const std::exception& e) {
            fail(std::string(where) + ": " + e.what());
        } catch (...) {
            fail(std::string(where) + ": unknown exception");
        }
    }

    // Runs body: an error that kind k's breakers allow ends it quietly, any
    // other exception is a failure of where.
    template<class Body>
    void guarded(kind k, const char* where, Body&& body)
    {
        try {
            body();
        } catch (const zmq::error_t& e) {
            if (!allowed(e, k))
                unexpected(where);
        } catch (...) {
            unexpected(where);
        }
    }
};

std::string endpoint(world& w, bool tcp)
{
    return tcp ? std::string("tcp://127.0.0.1:*")
               : "inproc://torture-" + std::to_string(w.seed) + "-" + std::to_string(w.slots++);
}

void connect_pair(world& w, green::socket_t& x, green::socket_t& y, bool tcp)
{
    x.set(zmq::sockopt::linger, 0);
    y.set(zmq::sockopt::linger, 0);
    const bool x_binds = w.chance(50);
    auto& binder = x_binds ? x : y;
    auto& connecter = x_binds ? y : x;
    binder.bind(endpoint(w, tcp));
    connecter.connect(binder.get(zmq::sockopt::last_endpoint));
}


// Checks one received message against its pair's expectations; false on an
// end marker.
bool account(world& w, tracked& p, std::vector<zmq::message_t>& frames, const char* who)
{
    size_t first = p.k == kind::dealer_router ? 1 : 0;
    if (frames.size() <= first || frames[first].size() != sizeof(header)) {
        w.fail(std::string(who) + ": malformed message on " + kind_name(p.k));
        return true;
    }
    header h{};
    std::memcpy(&h, frames[first].data(), sizeof h);
    if (h.sender == end_marker)
        return false;
    if (h.sender >= p.next.size() || frames.size() - first != h.frames) {
        w.fail(std::string(who) + ": bad header/frame count on " + kind_name(p.k));
        return true;
    }
    for (std::uint32_t i = 1; i < h.frames; ++i) {
        std::uint32_t body[2] = {};
        const auto& f = frames[first + i];
        if (f.size() == sizeof body)
            std::memcpy(body, f.data(), sizeof body);
        if (body[0] != h.seq || body[1] != i)
            w.fail(std::string(who) + ": frame " + std::to_string(i) + " mixed up on "
                   + kind_name(p.k));
    }
    if (h.seq != p.next[h.sender])
        w.fail(std::string(who) + ": " + kind_name(p.k) + " sender " + std::to_string(h.sender)
               + " expected seq " + std::to_string(p.next[h.sender]) + " got "
               + std::to_string(h.seq));
    p.next[h.sender] = h.seq + 1;
    ++p.received;
    return true;
}

// Sends one message in a random style; retries until it is queued. Throws
// what the socket throws.
void send_one(world& w, green::socket_t& s, std::vector<zmq::message_t> frames, int style,
              int slot)
{
    for (;;) {
        switch (style) {
        case 0: {
            op(slot, "send_multipart blocking");
            std::vector<zmq::message_t> copy;
            for (auto& f : frames)
                copy.emplace_back(f.data(), f.size());
            if (green::send_multipart(s, copy))
                return;
            break;
        }
        case 1: {
            op(slot, "send frame by frame");
            bool ok = true;
            for (size_t i = 0; i < frames.size() && ok; ++i) {
                zmq::message_t m(frames[i].data(), frames[i].size());
                static const char* const names[] = {"send frame 0", "send frame 1", "send frame 2"};
                op(slot, names[i]);
                ok = s.send(m, i + 1 < frames.size() ? zmq::send_flags::sndmore
                                                     : zmq::send_flags::none)
                         .has_value();
                if (!ok && i > 0)
                    w.fail("a frame after the first returned empty");
            }
            if (ok)
                return;
            break;
        }
        case 2: {
            op(slot, "send_multipart dontwait");
            std::vector<zmq::message_t> copy;
            for (auto& f : frames)
                copy.emplace_back(f.data(), f.size());
            if (green::send_multipart(s, copy, zmq::send_flags::dontwait))
                return;
            op(slot, "socket poll pollout");
            (void)s.poll(ZMQ_POLLOUT, std::chrono::milliseconds{w.pick(0, 10)});
            break;
        }
        default: {
            op(slot, "send_multipart sndtimeo");
            s.set(zmq::sockopt::sndtimeo, w.pick(0, 10));
            std::vector<zmq::message_t> copy;
            for (auto& f : frames)
                copy.emplace_back(f.data(), f.size());
            if (green::send_multipart(s, copy))
                return;
            break;
        }
        }
        // A zero timeout fails without yielding (as libzmq's would): a
        // retry loop must let the fiber it waits for run.
        boost::this_fiber::yield();
    }
}

// Receives one message in a random style; empty when the style's wait ended
// without one.
std::optional<std::vector<zmq::message_t>> recv_one(world& w, green::socket_t& s, int style,
                                                    int slot)
{
    std::vector<zmq::message_t> frames;
    switch (style) {
    case 0:
        op(slot, "recv_multipart blocking");
        if (!green::recv_multipart(s, std::back_inserter(frames)))
            return std::nullopt;
        return frames;
    case 1: {
        op(slot, "recv frame by frame");
        for (bool more = true; more;) {
            zmq::message_t m;
            if (!s.recv(m)) {
                if (!frames.empty())
                    w.fail("a frame after the first returned empty");
                return std::nullopt;
            }
            more = m.more();
            frames.push_back(std::move(m));
        }
        return frames;
    }
    case 2:
        op(slot, "recv_multipart dontwait");
        if (green::recv_multipart(s, std::back_inserter(frames), zmq::recv_flags::dontwait))
            return frames;
        op(slot, "socket poll pollin");
        (void)s.poll(ZMQ_POLLIN, std::chrono::milliseconds{w.pick(0, 10)});
        return std::nullopt;
    case 3: {
        op(slot, "green::poll");
        std::vector<zmq_pollitem_t> items{{static_cast<void*>(s), 0, ZMQ_POLLIN, 0}};
        (void)green::poll(items, std::chrono::milliseconds{w.pick(0, 10)});
        if (green::recv_multipart(s, std::back_inserter(frames), zmq::recv_flags::dontwait))
            return frames;
        return std::nullopt;
    }
    case 4: {
        op(slot, "poller_t");
        green::poller_t<> poller;
        poller.add(s, green::event_flags::pollin);
        std::vector<green::poller_event<>> events(1);
        (void)poller.wait_all(events, std::chrono::milliseconds{w.pick(0, 10)});
        if (green::recv_multipart(s, std::back_inserter(frames), zmq::recv_flags::dontwait))
            return frames;
        return std::nullopt;
    }
    case 5: {
        op(slot, "recv buffers");
        for (bool more = true; more;) {
            std::array<char, 64> buf{};
            const auto r = s.recv(zmq::buffer(buf));
            if (!r) {
                if (!frames.empty())
                    w.fail("a buffer frame after the first returned empty");
                return std::nullopt;
            }
            if (r->truncated())
                w.fail("a frame was truncated");
            frames.emplace_back(buf.data(), r->size);
            more = s.get(zmq::sockopt::rcvmore) != 0;
        }
        return frames;
    }
    default:
        op(slot, "recv_multipart rcvtimeo");
        s.set(zmq::sockopt::rcvtimeo, w.pick(0, 10));
        if (!green::recv_multipart(s, std::back_inserter(frames)))
            return std::nullopt;
        return frames;
    }
}

void sender_fiber(world& w, tracked& p, std::uint32_t id)
{
    const int slot = w.slot();
    w.guarded(p.k, "sender", [&] {
        for (int seq = 0; seq < p.per_sender; ++seq) {
            header h{p.index, id,
                     static_cast<std::uint32_t>(seq), static_cast<std::uint32_t>(w.pick(1, 3))};
            send_one(w, p.a, make_message(h), w.pick(0, 3), slot);
            if (w.chance(20)) {
                op(slot, "yield");
                boost::this_fiber::yield();
            }
        }
        if (++p.senders_done == p.senders && !p.stream) {
            // After every message, one end marker per receiving fiber.
            for (int r = 0; r < p.receivers; ++r) {
                header h{0, end_marker, 0, 1};
                send_one(w, p.a, make_message(h), 0, slot);
            }
        }
    });
    op(slot, "sender done");
}

void receiver_fiber(world& w, tracked& p)
{
    const int slot = w.slot();
    w.guarded(p.k, "receiver", [&] {
        for (;;) {
            auto m = recv_one(w, p.b, w.pick(0, 6), slot);
            if (!m)
                boost::this_fiber::yield(); // as in send_one
            else if (!account(w, p, *m, "receiver"))
                break;
        }
    });
    ++p.receivers_done;
    op(slot, "receiver done");
}

void req_fiber(world& w, tracked& p)
{
    const int slot = w.slot();
    w.guarded(p.k, "req", [&] {
        for (int i = 0; i < p.per_sender; ++i) {
            header h{0, 0, static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(w.pick(1, 3))};
            send_one(w, p.a, make_message(h), w.chance(50) ? 0 : 1, slot);
            std::optional<std::vector<zmq::message_t>> reply;
            // No timeout: a REQ that gave up on its reply cannot send again.
            const int style = w.pick(0, 5);
            while (!(reply = recv_one(w, p.a, style, slot)))
                boost::this_fiber::yield();
            if (!account(w, p, *reply, "req"))
                w.fail("req got an end marker");
        }
        header h{0, end_marker, 0, 1};
        send_one(w, p.a, make_message(h), 0, slot);
    });
    op(slot, "req done");
}

void rep_fiber(world& w, tracked& p)
{
    const int slot = w.slot();
    w.guarded(p.k, "rep", [&] {
        for (;;) {
            auto m = recv_one(w, p.b, w.pick(0, 6), slot);
            if (!m) {
                boost::this_fiber::yield();
                continue;
            }
            header h{};
            if (m->at(0).size() == sizeof h)
                std::memcpy(&h, m->at(0).data(), sizeof h);
            if (h.sender == end_marker)
                break;
            send_one(w, p.b, std::move(*m), w.pick(0, 3), slot);
        }
    });
    op(slot, "rep done");
}

// The receiving end of a pair as a zmq_stream on an io_loop of its own fiber.
void stream_fiber(world& w, tracked& p)
{
    const int slot = w.slot();
    w.guarded(p.k, "stream", [&] {
        green::io_loop loop;
        loop.set_fallback_interval(green::hub::current().fallback_interval());
        green::zmq_stream stream(green::socket_ref(p.b), loop);
        const std::uint64_t expected = static_cast<std::uint64_t>(p.senders) * p.per_sender;
        std::function<void(green::zmq_stream::message&)> on_msg;
        on_msg = [&](green::zmq_stream::message& m) {
            op(slot, "stream on_recv");
            account(w, p, m, "stream");
            if (p.received == expected)
                loop.stop();
            else if (w.chance(10)) {
                op(slot, "stream flush");
                (void)stream.flush(ZMQ_POLLIN, static_cast<size_t>(w.pick(0, 3)));
            } else if (w.chance(5)) {
                op(slot, "stream stop_on_recv");
                stream.stop_on_recv();
                loop.call_later(std::chrono::milliseconds{w.pick(0, 3)}, [&] {
                    if (!stream.closed())
                        stream.on_recv(on_msg);
                });
            }
        };
        stream.on_recv(on_msg);
        stream.set_close_callback([&] { loop.stop(); });
        // A broken pair or context ends the loop.
        green::periodic_callback check(loop, [&] {
            op(slot, "stream check");
            if (w.shut || p.broken || stream.closed())
                loop.stop();
        }, 5ms);
        check.start();
        op(slot, "stream loop start");
        loop.start();
        op(slot, "stream loop stopped");
        if (loop.stats().rescues != 0)
            w.fail("io_loop rescues");
    });
    ++p.receivers_done;
    op(slot, "stream done");
}

struct counting_monitor : green::monitor_t {
    int events = 0;
    void on_event_connected(const zmq_event_t&, const char*) override { ++events; }
    void on_event_accepted(const zmq_event_t&, const char*) override { ++events; }
    void on_event_closed(const zmq_event_t&, const char*) override { ++events; }
};

// Random operations on the untracked sockets, with bounded waits.
void chaos_fiber(world& w, int ops)
{
    const int slot = w.slot();
    for (int i = 0; i < ops; ++i) {
        auto& s = w.chaos[static_cast<size_t>(w.pick(0, static_cast<int>(w.chaos.size()) - 1))];
        try {
            zmq::message_t m;
            switch (w.pick(0, 9)) {
            case 0:
                op(slot, "chaos send dontwait");
                (void)s.send(zmq::str_buffer("x"), zmq::send_flags::dontwait);
                break;
            case 1:
                op(slot, "chaos send sndtimeo");
                s.set(zmq::sockopt::sndtimeo, w.pick(0, 5));
                (void)s.send(zmq::str_buffer("y"));
                break;
            case 2:
                op(slot, "chaos recv rcvtimeo");
                s.set(zmq::sockopt::rcvtimeo, w.pick(0, 5));
                (void)s.recv(m);
                break;
            case 3:
                op(slot, "chaos recv dontwait");
                (void)s.recv(m, zmq::recv_flags::dontwait);
                break;
            case 4: {
                op(slot, "chaos poll all");
                std::vector<zmq_pollitem_t> items;
                for (auto& c : w.chaos)
                    if (c.handle() != nullptr)
                        items.push_back({static_cast<void*>(c), 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0});
                if (!items.empty())
                    (void)green::poll(items, std::chrono::milliseconds{w.pick(0, 5)});
                break;
            }
            case 5:
                op(slot, "chaos socket poll");
                (void)s.poll(w.chance(50) ? ZMQ_POLLIN : ZMQ_POLLOUT,
                             std::chrono::milliseconds{w.pick(0, 5)});
                break;
            case 6:
                op(slot, "chaos events");
                (void)s.get(zmq::sockopt::events);
                break;
            case 7:
                op(slot, "chaos sleep");
                boost::this_fiber::sleep_for(std::chrono::microseconds{w.pick(0, 2000)});
                break;
            case 8: {
                op(slot, "chaos multipart");
                s.set(zmq::sockopt::sndtimeo, w.pick(0, 5));
                const std::vector<zmq::const_buffer> parts{zmq::str_buffer("a"),
                                                           zmq::str_buffer("b")};
                (void)green::send_multipart(s, parts);
                break;
            }
            default:
                if (w.chance(20)) {
                    op(slot, "chaos close");
                    s.close();
                } else {
                    op(slot, "chaos yield");
                    boost::this_fiber::yield();
                }
                break;
            }
        } catch (const zmq::error_t& e) {
            if (e.num() != ETERM && e.num() != ENOTSOCK)
                w.unexpected("chaos");
        } catch (...) {
            w.unexpected("chaos");
        }
    }
    op(slot, "chaos done");
}

void run_seed(std::uint32_t seed)
{
    begin_seed(seed);
    world w(seed);
    auto& hub = green::hub::current();
    const bool fallback_off = w.chance(50);
    hub.set_fallback_interval(fallback_off ? 0ms : 50ms);
    const auto rescues_before = hub.stats().rescues;

    // The pairs.
    const int npairs = w.pick(1, 4);
    for (int i = 0; i < npairs; ++i) {
        auto p = std::make_unique<tracked>();
        p->index = static_cast<std::uint32_t>(i);
        p->k = static_cast<kind>(w.pick(0, 4));
        p->tcp = w.chance(40);
        switch (p->k) {
        case kind::pair:
            p->a = green::socket_t(w.ctx, zmq::socket_type::pair);
            p->b = green::socket_t(w.ctx, zmq::socket_type::pair);
            break;
        case kind::pushpull:
            p->a = green::socket_t(w.ctx, zmq::socket_type::push);
            p->b = green::socket_t(w.ctx, zmq::socket_type::pull);
            break;
        case kind::dealer_router:
            p->a = green::socket_t(w.ctx, zmq::socket_type::dealer);
            p->b = green::socket_t(w.ctx, zmq::socket_type::router);
            break;
        case kind::pubsub:
            p->a = green::socket_t(w.ctx, zmq::socket_type::pub);
            p->b = green::socket_t(w.ctx, zmq::socket_type::sub);
            p->b.set(zmq::sockopt::subscribe, "");
            break;
        case kind::reqrep:
            p->a = green::socket_t(w.ctx, zmq::socket_type::req);
            p->b = green::socket_t(w.ctx, zmq::socket_type::rep);
            break;
        }
        // PUB drops at its high-water mark.
        if (p->k != kind::pubsub && w.chance(30)) {
            p->a.set(zmq::sockopt::sndhwm, w.pick(1, 4));
            p->b.set(zmq::sockopt::rcvhwm, w.pick(1, 4));
        }
        connect_pair(w, p->a, p->b, p->tcp);
        p->senders = p->k == kind::reqrep ? 1 : w.pick(1, 3);
        p->receivers = p->k == kind::reqrep ? 1 : w.pick(1, 3);
        p->stream = p->k != kind::reqrep && p->k != kind::pubsub && w.chance(25);
        p->per_sender = w.pick(1, 40);
        p->next.assign(static_cast<size_t>(p->senders), 0);
        if (p->k == kind::pubsub) {
            // A handshake, so that the subscription is in place: PUB drops
            // messages nobody subscribed to yet.
            for (;;) {
                (void)p->a.send(zmq::str_buffer("hello"), zmq::send_flags::dontwait);
                zmq::message_t m;
                p->b.set(zmq::sockopt::rcvtimeo, 10);
                if (p->b.recv(m))
                    break;
            }
            // Hellos still on their way (over tcp) come before this one.
            (void)p->a.send(zmq::str_buffer("ready"), zmq::send_flags::dontwait);
            p->b.set(zmq::sockopt::rcvtimeo, -1);
            zmq::message_t m;
            do {
                (void)p->b.recv(m);
            } while (m.to_string_view() != "ready");
        }
        w.pairs.push_back(std::move(p));
    }
    // The chaos sockets.
    const int nchaos = w.pick(0, 2);
    for (int i = 0; i < nchaos; ++i) {
        const bool tcp = w.chance(40);
        w.chaos.emplace_back(w.ctx, zmq::socket_type::pair);
        w.chaos.emplace_back(w.ctx, zmq::socket_type::pair);
        connect_pair(w, w.chaos[w.chaos.size() - 2], w.chaos.back(), tcp);
    }

    // What breaks, and when: 0 nothing, 1 a pair closed, 2 shutdown from a
    // fiber, 3 from a thread, 4 destroy, 5 close, 6 destroy during a close.
    const int breaker = w.chance(50) ? 0 : w.pick(1, 6);
    const int delay_us = w.pick(0, 3000);

    if (std::getenv("ZMQ_GREEN_TORTURE_VERBOSE")) {
        std::cerr << "  fallback " << (fallback_off ? "off" : "on") << ", breaker " << breaker
                  << " after " << delay_us << " us, chaos sockets " << w.chaos.size() << "\n";
        for (auto& pp : w.pairs)
            std::cerr << "  " << kind_name(pp->k) << (pp->tcp ? " tcp" : " inproc")
                      << (pp->stream ? " stream" : "") << " senders " << pp->senders
                      << " receivers " << pp->receivers << " x" << pp->per_sender << "\n";
    }
    w.slots = 0;
    dump_state = [&w] {
        for (const auto& f : w.failures)
            std::cerr << "  failure: " << f << "\n";
        for (auto& pp : w.pairs)
            std::cerr << "  " << kind_name(pp->k) << ": senders done " << pp->senders_done
                      << ", receivers done " << pp->receivers_done << ", received "
                      << pp->received << ", broken " << pp->broken << "\n";
    };
    std::vector<boost::fibers::fiber> fibers;
    for (auto& pp : w.pairs) {
        tracked& p = *pp;
        if (p.k == kind::reqrep) {
            fibers.emplace_back([&w, &p] { rep_fiber(w, p); });
            fibers.emplace_back([&w, &p] { req_fiber(w, p); });
            continue;
        }
        if (p.stream) {
            fibers.emplace_back([&w, &p] { stream_fiber(w, p); });
        } else {
            for (int r = 0; r < p.receivers; ++r)
                fibers.emplace_back([&w, &p] { receiver_fiber(w, p); });
        }
        for (int s = 0; s < p.senders; ++s)
            fibers.emplace_back(
                [&w, &p, s] { sender_fiber(w, p, static_cast<std::uint32_t>(s)); });
    }
    for (int c = 0; c < (w.chaos.empty() ? 0 : w.pick(1, 3)); ++c)
        fibers.emplace_back([&w, ops = w.pick(1, 30)] { chaos_fiber(w, ops); });
    // A fiber parked without a timeout on a chaos socket that another closes.
    if (!w.chaos.empty() && w.chance(50)) {
        auto& s = w.chaos[static_cast<size_t>(w.pick(0, static_cast<int>(w.chaos.size()) - 1))];
        const int d = w.pick(0, 2000);
        fibers.emplace_back([&w, &s] {
            const int slot = w.slot();
            try {
                s.set(zmq::sockopt::rcvtimeo, -1);
                zmq::message_t m;
                for (;;) {
                    op(slot, "parked recv on a chaos socket");
                    // The chaos fibers set RCVTIMEO too, maybe to 0.
                    if (!s.recv(m))
                        boost::this_fiber::yield();
                }
            } catch (const zmq::error_t& e) {
                if (e.num() != ETERM && e.num() != ENOTSOCK)
                    w.unexpected("parked");
            } catch (...) {
                w.unexpected("parked");
            }
            op(slot, "parked done");
        });
        fibers.emplace_back([&w, &s, d] {
            const int slot = w.slot();
            op(slot, "closer sleeps");
            boost::this_fiber::sleep_for(std::chrono::microseconds{d});
            op(slot, "closer closes");
            s.close();
        });
    }
    // A monitor on one of the sockets.
    std::unique_ptr<counting_monitor> mon;
    std::optional<boost::fibers::fiber> mon_fiber;
    if (w.chance(30)) {
        mon = std::make_unique<counting_monitor>();
        auto& target = w.pairs.front()->b;
        const std::string addr =
            "inproc://torture-monitor-" + std::to_string(seed) + "-" + std::to_string(w.slots);
        mon_fiber.emplace([&w, &mon, &target, addr] {
            const int slot = w.slot();
            try {
                op(slot, "monitor");
                mon->monitor(target, addr);
            } catch (const zmq::error_t& e) {
                if (e.num() != ETERM && e.num() != ENOTSOCK)
                    w.unexpected("monitor");
            } catch (...) {
                w.unexpected("monitor");
            }
            op(slot, "monitor done");
        });
    }

    std::thread shutter;
    std::optional<boost::fibers::fiber> breaker_fiber;
    switch (breaker) {
    case 0:
        break;
    case 3:
        shutter = std::thread([&w, delay_us] {
            std::this_thread::sleep_for(std::chrono::microseconds{delay_us});
            w.ctx.shutdown();
        });
        w.shut = true;
        break;
    default: {
        const int victim = w.pick(0, static_cast<int>(w.pairs.size()) - 1);
        const bool b_first = w.chance(50);
        breaker_fiber.emplace([&w, breaker, delay_us, victim, b_first] {
            const int slot = w.slot();
            op(slot, "breaker sleeps");
            boost::this_fiber::sleep_for(std::chrono::microseconds{delay_us});
            try {
                switch (breaker) {
                case 1: {
                    op(slot, "breaker closes a pair");
                    tracked& p = *w.pairs[static_cast<size_t>(victim)];
                    p.broken = true;
                    (b_first ? p.b : p.a).close();
                    boost::this_fiber::yield();
                    (b_first ? p.a : p.b).close();
                    break;
                }
                case 2:
                    op(slot, "breaker shutdown");
                    w.shut = true;
                    w.ctx.shutdown();
                    break;
                case 4:
                    op(slot, "breaker destroy");
                    w.shut = true;
                    w.ctx.destroy(0ms);
                    break;
                case 5:
                    op(slot, "breaker close");
                    w.shut = true;
                    w.ctx.close();
                    break;
                default: {
                    // destroy() while another fiber's close() waits.
                    w.shut = true;
                    boost::fibers::fiber closer([&w] { w.ctx.close(); });
                    op(slot, "breaker destroy during close");
                    w.ctx.destroy();
                    closer.join();
                    break;
                }
                }
            } catch (...) {
                w.unexpected("breaker");
            }
            op(slot, "breaker done");
        });
    }
    }

    for (auto& f : fibers)
        f.join();
    if (mon_fiber) {
        if (mon_fiber->joinable()) {
            try {
                // The monitor ends at its socket's close or the shutdown; else stop it.
                if (!w.shut && !w.pairs.front()->broken)
                    mon->abort();
            } catch (...) {
                w.unexpected("monitor abort");
            }
        }
        mon_fiber->join();
    }
    if (shutter.joinable())
        shutter.join();

    // Every pair nothing broke delivered everything.
    if (!w.shut)
        for (auto& pp : w.pairs) {
            tracked& p = *pp;
            if (p.broken)
                continue;
            for (size_t s = 0; s < p.next.size(); ++s)
                if (p.next[s] != static_cast<std::uint32_t>(p.per_sender))
                    w.fail(std::string("lost messages on ") + kind_name(p.k) + " sender "
                           + std::to_string(s) + ": " + std::to_string(p.next[s]) + " of "
                           + std::to_string(p.per_sender));
        }
    if (!fallback_off && hub.stats().rescues != rescues_before)
        w.fail("the fallback re-check rescued "
               + std::to_string(hub.stats().rescues - rescues_before) + " waits");

    for (auto& pp : w.pairs) {
        pp->a.close();
        pp->b.close();
    }
    for (auto& c : w.chaos)
        c.close();
    mon.reset();
    if (breaker_fiber)
        breaker_fiber->join();
    dump_state = nullptr;
    for (const auto& f : w.failures)
        ADD_FAILURE() << "seed " << seed << ": " << f;
}

} // namespace

TEST(torture, random_operations_on_one_hub)
{
    run_seeds(run_seed);
}
