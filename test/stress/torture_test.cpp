// A seeded randomized torture: on one hub, fibers drive socket pairs of every
// pattern, over inproc and tcp, in every blocking style (blocking, dontwait,
// timeouts, multipart frame by frame, poll, poller_t, socket poll, zmq_stream
// on an io_loop, monitor_t), while a seed may close a pair under its waiters,
// or shut down, destroy or close the context from a fiber or another thread.
// A DEALER/ROUTER pair may have several DEALERs, and half the PAIR and
// DEALER/ROUTER pairs carry messages both ways at once: the ROUTER
// (mandatory) replies to each DEALER it has heard from, and several fibers
// send and receive on each socket, so that whole messages must not mix.
// Every fiber must end, only the documented errors may escape, and every
// message of a pair nothing broke arrives exactly once, in order per sender,
// in both directions, at the socket it was meant for.
// ZMQ_GREEN_TORTURE_FIRST and ZMQ_GREEN_TORTURE_SEEDS pick the seeds.
#include "stress.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <numeric>
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

// A breaker's errors. EHOSTUNREACH: a ROUTER_MANDATORY reply to a DEALER a
// breaker closed (on a pair nothing broke, the reply's loss fails the count).
bool closed_or_shut(const zmq::error_t& e) { return e.num() == ETERM || e.num() == ENOTSOCK; }
bool allowed(const zmq::error_t& e, kind k)
{
    return closed_or_shut(e) || (k == kind::reqrep && e.num() == EFSM)
           || (k == kind::dealer_router && e.num() == EHOSTUNREACH);
}

// The messages of one direction of a pair. A message's header.stream is the
// DEALER it comes from or goes to (0 on other kinds), so a sender is known by
// (stream, sender) and each receiving DEALER checks that its replies are its.
struct flow {
    int senders = 1;   // fibers on each sending socket
    int receivers = 1; // fibers on each receiving socket, unless a zmq_stream receives
    bool stream = false;
    int per_sender = 0;            // messages of a sender (to each DEALER, from a ROUTER)
    std::vector<int> senders_done; // per sending socket
    int sockets_done = 0;          // sending sockets whose senders are all done
    int receivers_done = 0;
    std::vector<std::uint32_t> next;      // per (stream, sender)
    std::vector<std::uint64_t> received;  // per stream
    std::vector<int> ended;               // per stream: end markers received
};

struct tracked {
    kind k;
    bool tcp;
    std::vector<green::socket_t> a; // sends: one socket, or 1-3 DEALERs on one ROUTER
    green::socket_t b;              // receives
    flow out;                       // a -> b
    bool duplex = false;            // also b -> a, at the same time
    flow back;                      // b -> a: the ROUTER replies to every DEALER
    std::vector<std::string> identities; // per DEALER, as its ROUTER heard it
    // Signalled when the ROUTER hears a DEALER, a flow completes, or a
    // receiving fiber ends.
    boost::fibers::mutex mutex;
    boost::fibers::condition_variable changed;
    bool broken = false; // closed by the torture

    void notify()
    {
        std::lock_guard<boost::fibers::mutex> lock(mutex);
        changed.notify_all();
    }
    template<class Pred>
    void wait(Pred pred)
    {
        std::unique_lock<boost::fibers::mutex> lock(mutex);
        changed.wait(lock, pred);
    }
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

    // Runs body: an error that `ok` accepts (by default, a close's or a
    // shutdown's) ends it quietly, any other exception is a failure of where.
    template<class Body, class Ok = bool (*)(const zmq::error_t&)>
    void guarded(const char* where, Body&& body, Ok ok = closed_or_shut)
    {
        try {
            body();
        } catch (const zmq::error_t& e) {
            if (!ok(e))
                unexpected(where);
        } catch (...) {
            unexpected(where);
        }
    }
    // The errors that kind k's breakers allow.
    template<class Body>
    void guarded(kind k, const char* where, Body&& body)
    {
        guarded(where, body, [k](const zmq::error_t& e) { return allowed(e, k); });
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


// Whether every sending socket of flow f has had an end marker through.
bool ended(const flow& f)
{
    return std::all_of(f.ended.begin(), f.ended.end(), [](int n) { return n > 0; });
}

// Checks one received message of flow f against its pair's expectations;
// false on an end marker that ends the receiving fiber. at: the receiving
// socket, a's index, or -1 for b.
bool account(world& w, tracked& p, flow& f, std::vector<zmq::message_t>& frames, int at,
             const char* who)
{
    const bool router = p.k == kind::dealer_router && at < 0;
    const size_t first = router ? 1 : 0;
    if (frames.size() <= first || frames[first].size() != sizeof(header)) {
        w.fail(std::string(who) + ": malformed message on " + kind_name(p.k));
        return true;
    }
    header h{};
    std::memcpy(&h, frames[first].data(), sizeof h);
    if (h.stream >= p.a.size() || (at >= 0 && h.stream != static_cast<std::uint32_t>(at))) {
        w.fail(std::string(who) + ": " + kind_name(p.k) + " message of stream "
               + std::to_string(h.stream) + " reached socket " + std::to_string(at));
        return true;
    }
    if (router) {
        const std::string id(frames[0].data<char>(), frames[0].size());
        auto& known = p.identities[h.stream];
        if (known.empty()) {
            known = id;
            p.notify();
        } else if (known != id) {
            w.fail(std::string(who) + ": DEALER " + std::to_string(h.stream)
                   + " came with two identities");
        }
    }
    if (h.sender == end_marker) {
        if (at >= 0)
            return false; // from b, the one sending socket: a marker per receiving fiber
        // Several sending sockets each end with one marker, through pipes
        // that need not keep order between them: the receivers all end
        // once every one has (see end_flow).
        if (++f.ended[h.stream] == 1 && ended(f))
            p.notify();
        return !ended(f);
    }
    if (h.sender >= static_cast<std::uint32_t>(f.senders) || frames.size() - first != h.frames) {
        w.fail(std::string(who) + ": bad header/frame count on " + kind_name(p.k));
        return true;
    }
    for (std::uint32_t i = 1; i < h.frames; ++i) {
        std::uint32_t body[2] = {};
        const auto& fr = frames[first + i];
        if (fr.size() == sizeof body)
            std::memcpy(body, fr.data(), sizeof body);
        if (body[0] != h.seq || body[1] != i)
            w.fail(std::string(who) + ": frame " + std::to_string(i) + " mixed up on "
                   + kind_name(p.k));
    }
    auto& next = f.next[h.stream * static_cast<std::uint32_t>(f.senders) + h.sender];
    if (h.seq != next)
        w.fail(std::string(who) + ": " + kind_name(p.k) + " stream " + std::to_string(h.stream)
               + " sender " + std::to_string(h.sender) + " expected seq " + std::to_string(next)
               + " got " + std::to_string(h.seq));
    next = h.seq + 1;
    ++f.received[h.stream];
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
                static const char* const names[] = {"send frame 0", "send frame 1", "send frame 2",
                                                    "send frame 3"};
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

// The identity of DEALER d once its ROUTER has heard from it; null if the
// ROUTER's receivers ended first (a breaker).
const std::string* identity_of(tracked& p, std::uint32_t d)
{
    const int receiving = p.out.stream ? 1 : p.out.receivers;
    p.wait([&] { return !p.identities[d].empty() || p.out.receivers_done == receiving; });
    return p.identities[d].empty() ? nullptr : &p.identities[d];
}

// One message of flow f on s, to DEALER `stream` if s is the ROUTER; false if
// the ROUTER never heard from that DEALER.
bool send_to(world& w, tracked& p, flow& f, green::socket_t& s, const header& h, int style,
             int slot)
{
    auto frames = make_message(h);
    if (&f == &p.back && p.k == kind::dealer_router) {
        const std::string* id = identity_of(p, h.stream);
        if (id == nullptr)
            return false;
        frames.insert(frames.begin(), zmq::message_t(id->data(), id->size()));
    }
    send_one(w, s, std::move(frames), style, slot);
    return true;
}

// Ends flow f once the senders of sending socket `socket` (s) are done: end
// markers, one per receiving fiber. From b, the one sending socket, they
// follow the messages through each pipe. From several DEALERs, whose pipes
// to the ROUTER do not keep order between them, each sends one, and after
// the last the receivers are all ended (account): the last socket's sender
// waits for that, then sends one more per fiber still receiving.
void end_flow(world& w, tracked& p, flow& f, green::socket_t& s, int socket, int slot)
{
    if (++f.senders_done[static_cast<size_t>(socket)] != f.senders || f.stream)
        return;
    if (&f == &p.back) {
        for (std::uint32_t d = 0; d < p.a.size(); ++d)
            for (int r = 0; r < f.receivers; ++r)
                if (!send_to(w, p, f, s, header{d, end_marker, 0, 1}, 0, slot))
                    return;
        return;
    }
    const header marker{static_cast<std::uint32_t>(socket), end_marker, 0, 1};
    send_one(w, s, make_message(marker), 0, slot);
    if (++f.sockets_done != static_cast<int>(p.a.size()))
        return;
    op(slot, "sender waits for the receivers");
    p.wait([&] { return ended(f) || f.receivers_done == f.receivers; });
    for (int r = f.receivers_done; r < f.receivers; ++r)
        send_one(w, s, make_message(marker), 0, slot);
}

// Sender `id` of flow f on s, sending socket `socket` of the flow: per_sender
// messages, from b to each DEALER (or the other PAIR), in a random mix.
void sender_fiber(world& w, tracked& p, flow& f, green::socket_t& s, int socket, std::uint32_t id)
{
    const int slot = w.slot();
    w.guarded(p.k, "sender", [&] {
        const bool back = &f == &p.back;
        std::vector<std::uint32_t> streams; // the DEALERs (a's) it still sends to
        std::vector<std::uint32_t> seqs(p.a.size(), 0);
        if (back)
            for (std::uint32_t d = 0; d < p.a.size(); ++d)
                streams.push_back(d);
        else
            streams.push_back(static_cast<std::uint32_t>(socket));
        while (!streams.empty()) {
            const auto i = static_cast<size_t>(w.pick(0, static_cast<int>(streams.size()) - 1));
            const std::uint32_t d = streams[i];
            const header h{d, id, seqs[d]++, static_cast<std::uint32_t>(w.pick(1, 3))};
            if (seqs[d] == static_cast<std::uint32_t>(f.per_sender))
                streams.erase(streams.begin() + static_cast<std::ptrdiff_t>(i));
            if (!send_to(w, p, f, s, h, w.pick(0, 3), slot))
                return;
            if (w.chance(20)) {
                op(slot, "yield");
                boost::this_fiber::yield();
            }
        }
        end_flow(w, p, f, s, socket, slot);
    });
    op(slot, "sender done");
}

// A receiving fiber of flow f on s (at: a's index, or -1 for b).
void receiver_fiber(world& w, tracked& p, flow& f, green::socket_t& s, int at)
{
    const int slot = w.slot();
    w.guarded(p.k, "receiver", [&] {
        for (;;) {
            auto m = recv_one(w, s, w.pick(0, 6), slot);
            if (!m)
                boost::this_fiber::yield(); // as in send_one
            else if (!account(w, p, f, *m, at, "receiver"))
                break;
        }
    });
    ++f.receivers_done;
    p.notify();
    op(slot, "receiver done");
}

void req_fiber(world& w, tracked& p)
{
    const int slot = w.slot();
    w.guarded(p.k, "req", [&] {
        for (int i = 0; i < p.out.per_sender; ++i) {
            header h{0, 0, static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(w.pick(1, 3))};
            send_one(w, p.a[0], make_message(h), w.chance(50) ? 0 : 1, slot);
            std::optional<std::vector<zmq::message_t>> reply;
            // No timeout: a REQ that gave up on its reply cannot send again.
            const int style = w.pick(0, 5);
            while (!(reply = recv_one(w, p.a[0], style, slot)))
                boost::this_fiber::yield();
            if (!account(w, p, p.out, *reply, 0, "req"))
                w.fail("req got an end marker");
        }
        header h{0, end_marker, 0, 1};
        send_one(w, p.a[0], make_message(h), 0, slot);
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

// The receiving end of flow f on s (at: a's index, or -1 for b) as a
// zmq_stream on an io_loop of its own fiber.
void stream_fiber(world& w, tracked& p, flow& f, green::socket_t& s, int at)
{
    const int slot = w.slot();
    w.guarded(p.k, "stream", [&] {
        green::io_loop loop;
        loop.set_fallback_interval(green::hub::current().fallback_interval());
        green::zmq_stream stream(green::socket_ref(s), loop);
        // Messages to a, or from every a to b.
        const std::uint64_t expected = static_cast<std::uint64_t>(f.senders) * f.per_sender
                                       * (at < 0 ? p.a.size() : 1);
        auto received = [&] {
            return at < 0 ? std::accumulate(f.received.begin(), f.received.end(), std::uint64_t{0})
                          : f.received[static_cast<size_t>(at)];
        };
        std::function<void(green::zmq_stream::message&)> on_msg;
        on_msg = [&](green::zmq_stream::message& m) {
            op(slot, "stream on_recv");
            account(w, p, f, m, at, "stream");
            if (received() == expected)
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
    ++f.receivers_done;
    p.notify();
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
        w.guarded("chaos", [&] {
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
        });
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
        p->k = static_cast<kind>(w.pick(0, 4));
        p->tcp = w.chance(40);
        const int na = p->k == kind::dealer_router ? w.pick(1, 3) : 1;
        for (int j = 0; j < na; ++j) {
            switch (p->k) {
            case kind::pair: p->a.emplace_back(w.ctx, zmq::socket_type::pair); break;
            case kind::pushpull: p->a.emplace_back(w.ctx, zmq::socket_type::push); break;
            case kind::dealer_router: p->a.emplace_back(w.ctx, zmq::socket_type::dealer); break;
            case kind::pubsub: p->a.emplace_back(w.ctx, zmq::socket_type::pub); break;
            case kind::reqrep: p->a.emplace_back(w.ctx, zmq::socket_type::req); break;
            }
        }
        switch (p->k) {
        case kind::pair: p->b = green::socket_t(w.ctx, zmq::socket_type::pair); break;
        case kind::pushpull: p->b = green::socket_t(w.ctx, zmq::socket_type::pull); break;
        case kind::dealer_router: p->b = green::socket_t(w.ctx, zmq::socket_type::router); break;
        case kind::pubsub:
            p->b = green::socket_t(w.ctx, zmq::socket_type::sub);
            p->b.set(zmq::sockopt::subscribe, "");
            break;
        case kind::reqrep: p->b = green::socket_t(w.ctx, zmq::socket_type::rep); break;
        }
        p->duplex = (p->k == kind::pair || p->k == kind::dealer_router) && w.chance(50);
        // Small high-water marks, except on a PUB, which drops at its mark.
        // A REP's replies too: it must not drop one its peer made room for.
        if (p->k != kind::pubsub && w.chance(30)) {
            const bool answers = p->duplex || p->k == kind::reqrep;
            const int sndhwm = w.pick(1, 4), rcvhwm = w.pick(1, 4);
            for (auto& a : p->a) {
                a.set(zmq::sockopt::sndhwm, sndhwm);
                if (answers)
                    a.set(zmq::sockopt::rcvhwm, rcvhwm);
            }
            p->b.set(zmq::sockopt::rcvhwm, w.pick(1, 4));
            if (answers)
                p->b.set(zmq::sockopt::sndhwm, w.pick(1, 4));
        }
        // A ROUTER drops a reply at the high-water mark, or to a peer it does
        // not know, unless mandatory.
        if (p->duplex && p->k == kind::dealer_router)
            p->b.set(zmq::sockopt::router_mandatory, 1);
        for (auto& a : p->a)
            connect_pair(w, a, p->b, p->tcp);
        p->identities.resize(p->a.size());
        for (flow* f : {&p->out, &p->back}) {
            if (f == &p->back && !p->duplex)
                break;
            f->senders = p->k == kind::reqrep ? 1 : w.pick(1, 3);
            f->receivers = p->k == kind::reqrep ? 1 : w.pick(1, 3);
            f->stream = p->k != kind::reqrep && p->k != kind::pubsub && w.chance(25);
            f->per_sender = w.pick(1, p->duplex ? 25 : 40);
            f->senders_done.assign(f == &p->out ? p->a.size() : 1, 0);
            f->next.assign(p->a.size() * static_cast<size_t>(f->senders), 0);
            f->received.assign(p->a.size(), 0);
            f->ended.assign(p->a.size(), 0);
        }
        if (p->k == kind::pubsub) {
            // A handshake, so that the subscription is in place: PUB drops
            // messages nobody subscribed to yet.
            for (;;) {
                (void)p->a[0].send(zmq::str_buffer("hello"), zmq::send_flags::dontwait);
                zmq::message_t m;
                p->b.set(zmq::sockopt::rcvtimeo, 10);
                if (p->b.recv(m))
                    break;
            }
            // Hellos still on their way (over tcp) come before this one.
            (void)p->a[0].send(zmq::str_buffer("ready"), zmq::send_flags::dontwait);
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
        for (auto& pp : w.pairs) {
            std::cerr << "  " << kind_name(pp->k) << (pp->tcp ? " tcp" : " inproc") << " x"
                      << pp->a.size();
            for (const flow* f : {&pp->out, &pp->back})
                if (f == &pp->out || pp->duplex)
                    std::cerr << (f == &pp->out ? ", out" : ", back")
                              << (f->stream ? " stream" : "") << " senders " << f->senders
                              << " receivers " << f->receivers << " x" << f->per_sender;
            std::cerr << "\n";
        }
    }
    w.slots = 0;
    dump_state = [&w] {
        for (const auto& f : w.failures)
            std::cerr << "  failure: " << f << "\n";
        for (auto& pp : w.pairs)
            for (const flow* f : {&pp->out, &pp->back})
                if (f == &pp->out || pp->duplex)
                    std::cerr << "  " << kind_name(pp->k) << (f == &pp->out ? " out" : " back")
                              << ": sockets done " << f->sockets_done << ", receivers done "
                              << f->receivers_done << ", received "
                              << std::accumulate(f->received.begin(), f->received.end(),
                                                 std::uint64_t{0})
                              << ", broken " << pp->broken << "\n";
    };
    std::vector<boost::fibers::fiber> fibers;
    for (auto& pp : w.pairs) {
        tracked& p = *pp;
        if (p.k == kind::reqrep) {
            fibers.emplace_back([&w, &p] { rep_fiber(w, p); });
            fibers.emplace_back([&w, &p] { req_fiber(w, p); });
            continue;
        }
        // Out: from each a to b; back: from b to each a.
        auto receive = [&](flow& f, green::socket_t& s, int at) {
            if (f.stream) {
                fibers.emplace_back([&w, &p, &f, &s, at] { stream_fiber(w, p, f, s, at); });
                return;
            }
            for (int r = 0; r < f.receivers; ++r)
                fibers.emplace_back([&w, &p, &f, &s, at] { receiver_fiber(w, p, f, s, at); });
        };
        auto send = [&](flow& f, green::socket_t& s, int socket) {
            for (int i = 0; i < f.senders; ++i)
                fibers.emplace_back([&w, &p, &f, &s, socket, i] {
                    sender_fiber(w, p, f, s, socket, static_cast<std::uint32_t>(i));
                });
        };
        receive(p.out, p.b, -1);
        for (size_t j = 0; j < p.a.size(); ++j) {
            send(p.out, p.a[j], static_cast<int>(j));
            if (p.duplex)
                receive(p.back, p.a[j], static_cast<int>(j));
        }
        if (p.duplex)
            send(p.back, p.b, 0);
    }
    for (int c = 0; c < (w.chaos.empty() ? 0 : w.pick(1, 3)); ++c)
        fibers.emplace_back([&w, ops = w.pick(1, 30)] { chaos_fiber(w, ops); });
    // A fiber parked without a timeout on a chaos socket that another closes.
    if (!w.chaos.empty() && w.chance(50)) {
        auto& s = w.chaos[static_cast<size_t>(w.pick(0, static_cast<int>(w.chaos.size()) - 1))];
        const int d = w.pick(0, 2000);
        fibers.emplace_back([&w, &s] {
            const int slot = w.slot();
            w.guarded("parked", [&] {
                s.set(zmq::sockopt::rcvtimeo, -1);
                zmq::message_t m;
                for (;;) {
                    op(slot, "parked recv on a chaos socket");
                    // The chaos fibers set RCVTIMEO too, maybe to 0.
                    if (!s.recv(m))
                        boost::this_fiber::yield();
                }
            });
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
            w.guarded("monitor", [&] {
                op(slot, "monitor");
                mon->monitor(target, addr);
            });
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
                    if (b_first)
                        p.b.close();
                    for (auto& a : p.a) {
                        a.close();
                        boost::this_fiber::yield();
                    }
                    p.b.close(); // nothing if b went first
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

    // Every pair nothing broke delivered everything, both ways.
    if (!w.shut)
        for (auto& pp : w.pairs) {
            tracked& p = *pp;
            if (p.broken)
                continue;
            for (const flow* f : {&p.out, &p.back}) {
                if (f == &p.back && !p.duplex)
                    continue;
                for (size_t i = 0; i < f->next.size(); ++i)
                    if (f->next[i] != static_cast<std::uint32_t>(f->per_sender))
                        w.fail(std::string("lost messages on ") + kind_name(p.k)
                               + (f == &p.out ? " out" : " back") + " stream "
                               + std::to_string(i / static_cast<size_t>(f->senders)) + " sender "
                               + std::to_string(i % static_cast<size_t>(f->senders)) + ": "
                               + std::to_string(f->next[i]) + " of "
                               + std::to_string(f->per_sender));
            }
        }
    if (!fallback_off && hub.stats().rescues != rescues_before)
        w.fail("the fallback re-check rescued "
               + std::to_string(hub.stats().rescues - rescues_before) + " waits");

    for (auto& pp : w.pairs) {
        for (auto& a : pp->a)
            a.close();
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
