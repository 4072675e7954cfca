// A seeded randomized torture across threads: each thread has its own hub
// and fibers, and they talk over one shared context, inproc and tcp: flows of
// several senders on several threads to a receiver on another, directly
// (PUSH/PULL, DEALER/ROUTER with ROUTER_MANDATORY, PAIR), through a device in
// a fiber (proxy, killed and replaced at random; proxy_steerable steered
// with PAUSE, RESUME, STATISTICS, TERMINATE; monitored_queue) or a thread
// device (thread_proxy, _proxy_steerable, _monitored_queue, or a
// thread_device: STREAMER, FORWARDER or QUEUE, a QUEUE maybe from a ROUTER
// to a DEALER, binding out or connecting out to a receiver that binds;
// started at once or later, stopped at the end or mid-stream). A flow's one
// sender may be a zmq_stream at HWM 1 on an io_loop that also watches an
// eventfd written from any thread: messages of one frame (send) or several
// (send_multipart), queued at once, from a callback or in chunks from a
// fiber of its thread; flushes from callbacks, a periodic callback, that
// fiber and on_send (nesting to the documented depth where a flush handles
// nothing); a DEALER's acknowledgements through on_recv; callbacks that park.
// The loop ends from the callbacks that finish its work, so a wake-up it
// misses hangs or counts as a rescue rather than waits for a poll. REQ with
// REQ_RELAXED and REQ_CORRELATE under RCVTIMEO; XPUB with XPUB_NODROP at HWM
// 1; tasks, some through a pool, killed, joined or timed out while parked in
// multipart sends and in receives; use of a socket from a thread it does not
// belong to. A seed may shut the context down from a fiber or a bare thread,
// or close or destroy it from a fiber. Every fiber and thread must end, only
// the documented errors may escape, every message of an unbroken flow arrives
// exactly once and in order per sender, behind its sender's routing id where
// a ROUTER adds one (of others: never twice nor out of order), a killed
// multipart send leaves no half message, and the fallback re-checks of the
// hubs and loops rescue nothing.
// ZMQ_GREEN_TORTURE_FIRST, _SEEDS and _LIST pick the seeds; with
// ZMQ_GREEN_TORTURE_KILL set, a seed runs only kill scenarios (one or two per
// thread) and its breaker, to hunt a lost or half message there.
#include "stress.hpp"

#include <zmq/green/devices.hpp>
#include <zmq/green/io_loop.hpp>
#include <zmq/green/zmq_stream.hpp>
#include <zmq/green/task.hpp>
#include <zmq/green/timeout.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/eventfd.h>
#include <unistd.h>

using namespace std::chrono_literals;
namespace green = zmq::green;
namespace devices = zmq::green::devices;
using namespace stress::torture;

namespace {



// Whole, and the header; nullopt (and a failure) if malformed.
std::optional<header> parse(const std::vector<zmq::message_t>& frames, size_t first,
                            std::string& why)
{
    if (frames.size() <= first || frames[first].size() != sizeof(header)) {
        why = "malformed message";
        return std::nullopt;
    }
    header h{};
    std::memcpy(&h, frames[first].data(), sizeof h);
    if (h.sender == end_marker)
        return h;
    if (frames.size() - first != h.frames) {
        why = "half a message: " + std::to_string(frames.size() - first) + " of "
              + std::to_string(h.frames) + " frames";
        return std::nullopt;
    }
    for (std::uint32_t i = 1; i < h.frames; ++i) {
        std::uint32_t body[2] = {};
        const auto& f = frames[first + i];
        if (f.size() == sizeof body)
            std::memcpy(body, f.data(), sizeof body);
        if (body[0] != h.seq || body[1] != i) {
            why = "frames of two messages mixed";
            return std::nullopt;
        }
    }
    return h;
}

// A one-shot barrier of OS threads; only waited on while the thread runs no
// fibers.
class latch {
public:
    explicit latch(int n) : n_(n) {}
    void arrive_and_wait()
    {
        std::unique_lock<std::mutex> lock(m_);
        if (--n_ == 0)
            cv_.notify_all();
        cv_.wait(lock, [this] { return n_ == 0; });
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    int n_;
};

enum class dev {
    none,
    proxy,
    steerable,
    mq,
    thread_proxy,
    thread_steerable,
    thread_mq,
    thread_device
};
const char* dev_name(dev d)
{
    static const char* const names[] = {"none",         "proxy",            "steerable", "mq",
                                        "thread_proxy", "thread_steerable", "thread_mq",
                                        "thread_device"};
    return names[static_cast<int>(d)];
}
bool threaded(dev d) { return d >= dev::thread_proxy; }

struct kill_state {
    std::vector<int> completed; // per sender, sends that returned
    std::vector<bool> killed;
    std::vector<int> next; // per sender, the receiver's
    int finished = 0;
    std::vector<green::task> senders;
    green::task receiver;
};

// close and the destroys park until every thread has closed its sockets.
enum class breaker { none, shutdown_fiber, shutdown_thread, destroy, close, destroy_during_close };
bool waits_for_threads(breaker b) { return b >= breaker::destroy; }

struct flow {
    std::uint32_t index = 0;
    zmq::socket_type out_type = zmq::socket_type::push; // the senders'
    zmq::socket_type in_type = zmq::socket_type::pull;  // the receiver's
    bool tcp = false;
    int receiver_thread = 0;
    std::vector<int> sender_threads;
    int per_sender = 0;
    int hwm = 0; // 0: the default
    dev device = dev::none;
    int device_thread = 0;
    int stop_early_us = -1; // >= 0: a thread device stopped at a random moment
    bool stream_sender = false; // the one sender is a zmq_stream on an io_loop, HWM 1
    int stream_frames = 0;      // its messages: 0 of 1-3 frames, 1 of one (send), 2 of 2-5
    bool stream_feeder = false; // a fiber of its thread queues and flushes, outside the loop
    int stream_flush_on_send = 0; // percent of on_send calls that flush (nesting flushes)
    bool stream_flush_periodic = false; // a periodic_callback flushes too
    bool stream_on_recv = false; // a DEALER's acknowledgements go to on_recv, checked
    bool start_late = false;    // a thread device started by its keeper, on reserved ports
    // dev::thread_device: ZMQ_STREAMER, _FORWARDER or _QUEUE; a QUEUE may
    // take the senders (DEALERs) on a ROUTER and hand each message, behind
    // its sender's routing id, to a DEALER receiver. connect_out: the device
    // connects out to the receiver, which binds.
    int device_type = ZMQ_STREAMER;
    bool router_in = false;
    bool connect_out = false;
    // Endpoints, set in phase 1.
    std::string in_ep;  // where senders connect
    std::string out_ep; // where the receiver connects (devices)
    std::atomic<bool> done{false};      // the receiver has every end marker
    std::atomic<bool> abandoned{false}; // a device stopped early: nobody waits for the rest
    std::atomic<bool> broken{false};
    std::atomic<int> senders_finished{0};
    std::vector<std::uint32_t> next; // per sender, the receiver's

    // Frames before a message's header at the receiver: its sender's routing id.
    size_t envelope() const { return in_type == zmq::socket_type::router || router_in ? 1 : 0; }
};

struct shared {
    std::uint32_t seed;
    bool kills_only = false;
    int nthreads = 0;
    green::context_t ctx;
    std::vector<std::unique_ptr<flow>> flows;
    breaker brk = breaker::none;
    int breaker_thread = 0;
    int breaker_delay_us = 0;
    std::atomic<bool> shut{false};
    bool fallback_off = false;
    std::unique_ptr<latch> bound, connected, finished;
    // Sockets others may try, wrongly, to use: alive until `finished`.
    std::mutex foreign_mutex;
    std::vector<std::pair<int, green::socket_t*>> foreign;
    std::mutex failures_mutex;
    std::vector<std::string> failures;
    std::atomic<int> slots{0};
    // REQ/REP and XPUB/SUB between two threads (-1: none).
    int req_thread = -1, rep_thread = -1, xpub_thread = -1, sub_thread = -1;
    std::string rep_ep, xpub_ep;
    std::atomic<int> xpub_sent{-1}; // how many the XPUB queued; -1 while sending
    // An eventfd that a loop of loop_thread watches and a fiber of
    // efd_writer_thread (maybe the same) writes to.
    int loop_thread = -1, efd_writer_thread = -1;
    int efd = -1;
    int efd_writes = 0;
    std::atomic<bool> loop_running{false};

    void fail(const std::string& what)
    {
        std::lock_guard<std::mutex> lock(failures_mutex);
        failures.push_back(what);
    }
};

bool documented(const zmq::error_t& e) { return e.num() == ETERM || e.num() == ENOTSOCK; }

// One thread of the torture.
struct worker {
    shared& sh;
    int index;
    std::mt19937 rng;
    std::list<green::socket_t> sockets; // stable addresses, closed at the end
    std::vector<std::function<void()>> bodies;
    std::vector<std::unique_ptr<devices::background_device>> thread_devices;
    std::vector<std::shared_ptr<kill_state>> kills; // for the hang guard's dump
    std::vector<std::pair<flow*, green::socket_t*>> stream_flows;
    std::vector<std::pair<flow*, devices::background_device*>> connect_outs;

    worker(shared& s, int i) : sh(s), index(i), rng(s.seed * 7919u + static_cast<unsigned>(i)) {}

    int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
    bool chance(int percent) { return pick(0, 99) < percent; }
    int slot() { return sh.slots++; }

    green::socket_t& make(zmq::socket_type t, int hwm = 0)
    {
        auto& s = sockets.emplace_back(sh.ctx, t);
        s.set(zmq::sockopt::linger, 0);
        if (hwm > 0) {
            s.set(zmq::sockopt::sndhwm, hwm);
            s.set(zmq::sockopt::rcvhwm, hwm);
        }
        return s;
    }
    std::string endpoint(bool tcp, const char* what)
    {
        return tcp ? std::string("tcp://127.0.0.1:*")
                   : "inproc://tt-" + std::to_string(sh.seed) + "-" + what + "-"
                         + std::to_string(index) + "-" + std::to_string(sh.slots++);
    }
    void unexpected(const char* where)
    {
        try {
            throw;
        } catch (const zmq::error_t& e) {
            sh.fail(std::string(where) + ": zmq::error_t " + std::to_string(e.num()) + " "
                    + e.what());
        } catch (const green::fiber_cancelled&) {
            sh.fail(std::string(where) + ": fiber_cancelled");
        } catch (const std::exception& e) {
            sh.fail(std::string(where) + ": " + e.what());
        } catch (...) {
            sh.fail(std::string(where) + ": unknown exception");
        }
    }
    // Runs body in a fiber, failing on anything undocumented.
    void fiber(const char* where, std::function<void(int)> body)
    {
        bodies.push_back([this, where, body = std::move(body)] {
            const int s = slot();
            try {
                body(s);
            } catch (const zmq::error_t& e) {
                if (!documented(e))
                    unexpected(where);
            } catch (...) {
                unexpected(where);
            }
            op(s, "done");
        });
    }

    // ---- flows ----

    // May a wait on this flow block without a timeout? Not if a device may
    // vanish under it.
    static bool may_block(const flow& f)
    {
        return f.stop_early_us < 0 && !f.start_late && f.device != dev::proxy;
    }

    void send_one(flow& f, green::socket_t& s, const header& h, int slot)
    {
        for (;;) {
            if (f.abandoned)
                return;
            auto frames = make_message(h);
            const int style = may_block(f) ? pick(0, 3) : pick(1, 2);
            switch (style) {
            case 0:
                op(slot, "flow send_multipart blocking");
                if (green::send_multipart(s, frames))
                    return;
                break;
            case 1:
                op(slot, "flow send_multipart sndtimeo");
                s.set(zmq::sockopt::sndtimeo, pick(0, 10));
                if (green::send_multipart(s, frames))
                    return;
                break;
            case 2:
                op(slot, "flow send dontwait + poll");
                if (green::send_multipart(s, frames, zmq::send_flags::dontwait))
                    return;
                (void)s.poll(ZMQ_POLLOUT, std::chrono::milliseconds{pick(0, 10)});
                break;
            default: {
                op(slot, "flow send frame by frame");
                s.set(zmq::sockopt::sndtimeo, -1);
                for (size_t i = 0; i < frames.size(); ++i)
                    if (!s.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore
                                                                 : zmq::send_flags::none))
                        sh.fail("a blocking frame send returned empty");
                return;
            }
            }
            boost::this_fiber::yield();
        }
    }

    void add_sender(flow& f, std::uint32_t id)
    {
        if (f.stream_sender) {
            add_stream_sender(f);
            return;
        }
        auto& s = make(f.out_type, f.hwm);
        if (f.out_type == zmq::socket_type::dealer)
            s.set(zmq::sockopt::routing_id, "s" + std::to_string(id));
        s.connect(f.in_ep);
        register_foreign(s);
        fiber("flow sender", [this, &f, &s, id](int slot) {
            for (int seq = 0; seq < f.per_sender && !f.abandoned; ++seq) {
                send_one(f, s, {f.index, id, static_cast<std::uint32_t>(seq),
                                static_cast<std::uint32_t>(pick(1, 3))}, slot);
                if (chance(20))
                    boost::this_fiber::yield();
            }
            send_one(f, s, {f.index, end_marker, 0, 1}, slot);
            ++f.senders_finished;
        });
    }

    void add_receiver(flow& f, green::socket_t& s)
    {
        register_foreign(s);
        // A ROUTER_MANDATORY answers its senders, who never read: a full
        // peer refuses (empty result after SNDTIMEO), an unknown one is
        // EHOSTUNREACH.
        const bool mandatory = f.in_type == zmq::socket_type::router && chance(50);
        if (mandatory)
            s.set(zmq::sockopt::router_mandatory, 1);
        fiber("flow receiver", [this, &f, &s, mandatory](int slot) {
            const size_t first = f.envelope();
            size_t ends = 0;
            int idle = 0; // empty waits since a broken flow's senders finished
            while (ends < f.sender_threads.size() && !f.abandoned) {
                std::vector<zmq::message_t> frames;
                bool got = false;
                switch (may_block(f) ? pick(0, 3) : pick(1, 3)) {
                case 0:
                    op(slot, "flow recv_multipart blocking");
                    s.set(zmq::sockopt::rcvtimeo, -1);
                    got = green::recv_multipart(s, std::back_inserter(frames)).has_value();
                    break;
                case 1:
                    op(slot, "flow recv_multipart rcvtimeo");
                    s.set(zmq::sockopt::rcvtimeo, pick(0, 10));
                    got = green::recv_multipart(s, std::back_inserter(frames)).has_value();
                    break;
                case 2: {
                    op(slot, "flow green::poll");
                    std::vector<zmq_pollitem_t> items{
                        {static_cast<void*>(s), 0, ZMQ_POLLIN, 0}};
                    (void)green::poll(items, std::chrono::milliseconds{pick(0, 10)});
                    got = green::recv_multipart(s, std::back_inserter(frames),
                                                zmq::recv_flags::dontwait)
                              .has_value();
                    break;
                }
                default:
                    op(slot, "flow recv frame by frame");
                    s.set(zmq::sockopt::rcvtimeo, may_block(f) ? -1 : pick(0, 10));
                    for (bool more = true; more;) {
                        zmq::message_t m;
                        if (!s.recv(m)) {
                            if (!frames.empty())
                                sh.fail("a frame after the first returned empty");
                            break;
                        }
                        more = m.more();
                        frames.push_back(std::move(m));
                    }
                    got = !frames.empty();
                    break;
                }
                if (!got) {
                    // A killed proxy may have lost an end marker.
                    if (f.broken
                        && f.senders_finished == static_cast<int>(f.sender_threads.size())
                        && ++idle > 50)
                        break;
                    boost::this_fiber::yield();
                    continue;
                }
                idle = 0;
                std::string why;
                const auto h = parse(frames, first, why);
                if (!h) {
                    sh.fail("flow " + std::to_string(f.index) + ": " + why);
                    continue;
                }
                if (h->sender == end_marker) {
                    ++ends;
                    continue;
                }
                if (h->stream != f.index || h->sender >= f.next.size()) {
                    sh.fail("flow " + std::to_string(f.index) + ": foreign message");
                    continue;
                }
                if (first == 1 && frames[0].to_string() != "s" + std::to_string(h->sender))
                    sh.fail("flow " + std::to_string(f.index) + " (" + dev_name(f.device)
                            + "): sender " + std::to_string(h->sender) + "'s message behind "
                            + "routing id " + frames[0].to_string());
                if (mandatory && chance(30)) {
                    op(slot, "ROUTER_MANDATORY to a gone peer");
                    try {
                        const std::vector<zmq::const_buffer> ghost{zmq::str_buffer("ghost"),
                                                                   zmq::str_buffer("x")};
                        (void)green::send_multipart(s, ghost, zmq::send_flags::dontwait);
                        sh.fail("ROUTER_MANDATORY: a send to a gone peer did not fail");
                    } catch (const zmq::error_t& e) {
                        if (e.num() != EHOSTUNREACH)
                            throw;
                    }
                    op(slot, "ROUTER_MANDATORY to a slow peer");
                    s.set(zmq::sockopt::sndtimeo, pick(0, 2));
                    const std::vector<zmq::const_buffer> ack{
                        zmq::const_buffer(frames[0].data(), frames[0].size()),
                        zmq::const_buffer(frames[1].data(), frames[1].size()),
                        zmq::str_buffer("ack")};
                    try {
                        (void)green::send_multipart(s, ack);
                    } catch (const zmq::error_t& e) {
                        // Gone indeed: there a thread closes its sockets as
                        // soon as its fibers end (or destroy() closes them
                        // before the shutdown reaches this one).
                        if (e.num() != EHOSTUNREACH || !waits_for_threads(sh.brk))
                            throw;
                    }
                }
                auto& next = f.next[h->sender];
                // A device stopped early loses messages, but never repeats
                // or reorders them.
                if (h->seq < next || (h->seq != next && !f.broken))
                    sh.fail("flow " + std::to_string(f.index) + " (" + dev_name(f.device)
                            + ") sender " + std::to_string(h->sender) + ": expected seq "
                            + std::to_string(next) + ", got " + std::to_string(h->seq));
                next = h->seq + 1;
            }
            f.done = true;
        });
    }

    // Waits (green) until the flow needs its device no more.
    void await_flow(flow& f, int slot)
    {
        op(slot, "device keeper waits");
        while (!f.done && !f.abandoned && !sh.shut)
            boost::this_fiber::sleep_for(1ms);
    }

    void add_green_device(flow& f)
    {
        auto& in = make(zmq::socket_type::pull, f.hwm);
        auto& out = make(zmq::socket_type::push, f.hwm);
        in.bind(endpoint(f.tcp, "in"));
        out.bind(endpoint(f.tcp, "out"));
        f.in_ep = in.get(zmq::sockopt::last_endpoint);
        f.out_ep = out.get(zmq::sockopt::last_endpoint);
        green::socket_t* mon = nullptr;
        if (f.device != dev::proxy || chance(50)) {
            mon = &make(zmq::socket_type::pub);
            mon->bind(endpoint(false, "mon"));
        }
        if (f.device == dev::proxy) {
            // In a task, which the keeper may kill mid-stream and replace:
            // the sockets stay usable, and only the message the killed one
            // held can be lost (the flow counts as broken).
            auto run = [this, &in, &out, mon] {
                const int slot = this->slot();
                op(slot, "proxy");
                try {
                    green::proxy(in, out, mon ? green::socket_ref(*mon) : green::socket_ref());
                } catch (const zmq::error_t& e) {
                    if (!documented(e))
                        unexpected("proxy");
                }
                op(slot, "proxy done");
            };
            fiber("proxy keeper", [this, &f, &in, run](int slot) {
                green::task t = green::spawn(run);
                if (chance(30)) {
                    op(slot, "proxy keeper sleeps");
                    boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 2000)});
                    if (!f.done) {
                        op(slot, "proxy keeper kills the proxy");
                        f.broken = true;
                        t.kill();
                        if (!t.killed() && !sh.shut)
                            sh.fail("a killed proxy task did not end as killed");
                        t = green::spawn(run);
                    }
                }
                await_flow(f, slot);
                op(slot, "proxy keeper closes");
                in.close(); // ENOTSOCK ends the proxy
                if (!t.join(10s))
                    sh.fail("the proxy did not end when its frontend was closed");
            });
        } else if (f.device == dev::mq) {
            fiber("monitored_queue", [&in, &out, mon](int slot) {
                op(slot, "monitored_queue");
                green::monitored_queue(in, out, *mon);
            });
            fiber("mq keeper", [this, &f, &out](int slot) {
                await_flow(f, slot);
                op(slot, "mq keeper closes");
                out.close();
            });
        } else {
            auto& ctrl = make(zmq::socket_type::pair);
            auto& steer = make(zmq::socket_type::pair);
            ctrl.bind(endpoint(false, "ctrl"));
            steer.connect(ctrl.get(zmq::sockopt::last_endpoint));
            fiber("proxy_steerable", [&in, &out, mon, &ctrl](int slot) {
                op(slot, "proxy_steerable");
                green::proxy_steerable(in, out, *mon, ctrl);
            });
            fiber("steerer", [this, &f, &steer](int slot) {
                const int commands = pick(0, 6);
                for (int i = 0; i < commands && !f.done && !sh.shut; ++i) {
                    boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 1000)});
                    switch (pick(0, 2)) {
                    case 0:
                        op(slot, "steer PAUSE");
                        (void)steer.send(zmq::str_buffer("PAUSE"));
                        boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 1000)});
                        op(slot, "steer RESUME");
                        (void)steer.send(zmq::str_buffer("RESUME"));
                        break;
                    case 1: {
                        op(slot, "steer STATISTICS");
                        (void)steer.send(zmq::str_buffer("STATISTICS"));
                        std::vector<zmq::message_t> reply;
                        steer.set(zmq::sockopt::rcvtimeo, -1);
                        (void)green::recv_multipart(steer, std::back_inserter(reply));
                        if (reply.size() != 8)
                            sh.fail("STATISTICS: " + std::to_string(reply.size()) + " frames");
                        break;
                    }
                    default:
                        op(slot, "steer junk");
                        (void)steer.send(zmq::str_buffer("JUNK"));
                        break;
                    }
                }
                await_flow(f, slot);
                if (!sh.shut) {
                    op(slot, "steer TERMINATE");
                    (void)steer.send(zmq::str_buffer("TERMINATE"));
                }
            });
        }
    }

    void add_thread_device(flow& f)
    {
        std::unique_ptr<devices::background_device> d;
        if (f.device == dev::thread_proxy)
            d = std::make_unique<devices::thread_proxy>(ZMQ_PULL, ZMQ_PUSH);
        else if (f.device == dev::thread_steerable)
            d = std::make_unique<devices::thread_proxy_steerable>(ZMQ_PULL, ZMQ_PUSH);
        else if (f.device == dev::thread_mq)
            d = std::make_unique<devices::thread_monitored_queue>(ZMQ_PULL, ZMQ_PUSH);
        else
            d = std::make_unique<devices::thread_device>(f.device_type,
                                                         f.router_in ? ZMQ_ROUTER : ZMQ_PULL,
                                                         f.router_in ? ZMQ_DEALER : ZMQ_PUSH);
        if (f.hwm > 0) {
            d->setsockopt_in(ZMQ_RCVHWM, f.hwm);
            d->setsockopt_out(ZMQ_SNDHWM, f.hwm);
        }
        d->setsockopt_in(ZMQ_LINGER, 0);
        d->setsockopt_out(zmq::sockopt::linger, 0);
        // Started now, or later by its keeper on ports reserved now: the
        // senders and the receiver connect before it exists. One that
        // connects out waits for the receiver's endpoint, known in phase 2.
        const int start_late_us = f.start_late ? pick(0, 2000) : -1;
        if (start_late_us < 0 && !f.connect_out) {
            d->bind_in("tcp://127.0.0.1:*");
            d->bind_out("tcp://127.0.0.1:*");
            d->start();
            f.in_ep = d->endpoints().at(0).endpoint;
            f.out_ep = d->endpoints().at(1).endpoint;
        } else {
            // Below the kernel's ephemeral range, which the `:*` binds of
            // the other flows draw from.
            const std::string host = "tcp://127.0.0.1";
            f.in_ep = host + ":" + std::to_string(d->bind_in_to_random_port(host, 20000, 30000));
            if (!f.connect_out)
                f.out_ep =
                    host + ":" + std::to_string(d->bind_out_to_random_port(host, 20000, 30000));
        }
        auto* dp = d.get();
        thread_devices.push_back(std::move(d));
        if (f.connect_out)
            connect_outs.push_back({&f, dp});
        fiber("thread device keeper", [this, &f, dp, start_late_us](int slot) {
            if (f.abandoned)
                return; // its start in phase 2 failed
            if (start_late_us >= 0) {
                op(slot, "thread device keeper sleeps before start");
                boost::this_fiber::sleep_for(std::chrono::microseconds{start_late_us});
                op(slot, "thread device starts");
                if (!start_device(f, *dp))
                    return;
            }
            if (f.stop_early_us >= 0) {
                op(slot, "thread device keeper sleeps");
                boost::this_fiber::sleep_for(std::chrono::microseconds{f.stop_early_us});
                if (!f.done) {
                    f.broken = true;
                    op(slot, "thread device stopped early");
                    dp->stop();
                    f.abandoned = true;
                }
            }
            await_flow(f, slot);
            op(slot, "thread device keeper stops");
            if (chance(50)) {
                dp->stop();
            } else if (dp->done() || !dp->join(std::chrono::milliseconds{pick(0, 5)})) {
                dp->stop();
            }
            if (!dp->done())
                sh.fail("a stopped thread device is not done");
        });
    }

    // False, the flow abandoned, if the device could not bind a reserved
    // port: documented, as the port was only probed, and another socket of
    // the machine may have taken it.
    static bool start_device(flow& f, devices::background_device& d)
    {
        try {
            d.start();
            return true;
        } catch (const devices::device_error& e) {
            if (e.num() != EADDRINUSE)
                throw;
        }
        f.broken = true;
        f.abandoned = true;
        return false;
    }

    // Phase 2: the devices that connect out to a receiver bound in phase 1.
    void connect_devices_out()
    {
        for (auto& [f, d] : connect_outs) {
            d->connect_out(f->out_ep);
            if (!f->start_late)
                (void)start_device(*f, *d);
        }
    }

    // ---- io_loop: a zmq_stream sending at HWM 1, an eventfd handler ----

    // The flow's one sender, a zmq_stream whose sends the loop performs.
    void add_stream_sender(flow& f)
    {
        auto& s = make(f.out_type, 1);
        if (f.out_type == zmq::socket_type::dealer)
            s.set(zmq::sockopt::routing_id, "s0");
        s.connect(f.in_ep);
        stream_flows.push_back({&f, &s});
    }

    void add_loop()
    {
        if (stream_flows.empty() && sh.loop_thread != index)
            return;
        fiber("io_loop", [this](int slot) {
            green::io_loop loop;
            loop.set_fallback_interval(sh.fallback_off ? 0ms : 50ms);
            loop.set_error_handler([this](std::exception_ptr e) {
                try {
                    std::rethrow_exception(e);
                } catch (const zmq::error_t& err) {
                    if (!documented(err))
                        unexpected("io_loop callback");
                } catch (...) {
                    unexpected("io_loop callback");
                }
            });
            struct sending {
                flow* f;
                std::unique_ptr<green::zmq_stream> stream;
                int acked = 0;      // on_send calls
                int total = 0;      // messages queued
                bool fed = false;   // the end marker is queued
                bool over = false;  // acknowledged, or nobody waits
                std::map<boost::fibers::fiber::id, int> flushing; // our flushes in progress
                std::uint32_t next_ack = 0; // the receiver's acknowledgements, in order
            };
            std::vector<sending> streams;
            for (auto& [f, sock] : stream_flows) {
                auto& x = streams.emplace_back();
                x.f = f;
                x.stream = std::make_unique<green::zmq_stream>(green::socket_ref(*sock), loop);
            }
            int efd_sum = 0;
            // Ends the loop once everything is acknowledged and the eventfd
            // read, or the context or a device is gone. The callbacks that
            // complete the work call it, so a wake-up the loop misses hangs
            // it (the watchdog) or shows as a rescue instead of waiting for
            // a poll; only seeds where something may go away poll it too.
            auto settle = [&] {
                bool finished = sh.loop_thread != index || efd_sum == sh.efd_writes;
                for (auto& x : streams) {
                    if (!x.over
                        && ((x.fed && x.acked == x.total) || x.stream->closed()
                            || x.f->abandoned)) {
                        x.over = true;
                        ++x.f->senders_finished;
                    }
                    finished &= x.over;
                }
                if (finished || sh.shut)
                    loop.stop();
            };
            const bool may_go = sh.brk != breaker::none
                                || std::any_of(streams.begin(), streams.end(), [](const sending& x) {
                                       return x.f->stop_early_us >= 0 || x.f->start_late;
                                   });
            // A flush takes POLLIN only where a callback receives: without
            // one it would drop what arrives, as documented. Nested 16 deep
            // in the fiber's flushes of the stream, a callback's first flush
            // (ours are all first) handles nothing.
            auto flush = [this](sending& x, const char* why, int at) {
                if (x.stream->closed())
                    return;
                op(at, why);
                const short events =
                    !x.f->stream_on_recv
                        ? short{ZMQ_POLLOUT}
                        : std::array<short, 3>{ZMQ_POLLIN, ZMQ_POLLOUT,
                                               ZMQ_POLLIN | ZMQ_POLLOUT}[static_cast<size_t>(
                              pick(0, 2))];
                int& depth = x.flushing[boost::this_fiber::get_id()];
                const int below = depth++;
                struct leave {
                    int& depth;
                    ~leave() { --depth; }
                } nested{depth};
                const auto handled = x.stream->flush(events, static_cast<std::size_t>(pick(0, 3)));
                if (below >= 16 && handled != 0)
                    sh.fail("zmq_stream: a flush nested " + std::to_string(below + 1)
                            + " deep handled " + std::to_string(handled));
            };
            std::vector<boost::fibers::fiber> feeders;
            // Every message queued at once, then the rest in a callback or
            // from a fiber in chunks; the end marker last.
            for (auto& x : streams) {
                sending* px = &x;
                // One flush per call at most, so a chain of them nests one
                // level per message and stops at the documented depth (a
                // flush that handles nothing) without reaching the one that
                // throws. Some park in the middle, as the callback of a flush
                // may.
                x.stream->on_send([this, px, flush, &settle](const green::zmq_stream::message&,
                                                             const green::send_status& status) {
                    if (++px->acked == px->total && px->fed)
                        settle();
                    if (!status && status.error != ETERM && status.error != ENOTSOCK)
                        sh.fail("zmq_stream on_send: " + status.message());
                    if (chance(3))
                        boost::this_fiber::yield();
                    if (chance(px->f->stream_flush_on_send))
                        flush(*px, "zmq_stream flush in on_send", -1);
                });
                if (x.f->stream_on_recv)
                    x.stream->on_recv([this, px](green::zmq_stream::message& m) {
                        header h{};
                        if (m.size() != 2 || m[0].size() != sizeof h || m[1].to_string() != "ack") {
                            sh.fail("zmq_stream on_recv: a malformed acknowledgement");
                            return;
                        }
                        std::memcpy(&h, m[0].data(), sizeof h);
                        if (h.stream != px->f->index || h.sender != 0 || h.seq < px->next_ack)
                            sh.fail("zmq_stream on_recv: acknowledgement of " + std::to_string(h.seq)
                                    + " after " + std::to_string(px->next_ack));
                        px->next_ack = h.seq + 1;
                    });
                const int per = x.f->per_sender;
                auto queue = [this, px, per](int from, int to) {
                    for (int seq = from; seq < to; ++seq) {
                        const int nframes = px->f->stream_frames == 1   ? 1
                                            : px->f->stream_frames == 2 ? pick(2, 5)
                                                                        : pick(1, 3);
                        auto frames = make_message({px->f->index, 0,
                                                    static_cast<std::uint32_t>(seq),
                                                    static_cast<std::uint32_t>(nframes)});
                        if (frames.size() == 1 && (px->f->stream_frames == 1 || chance(50)))
                            px->stream->send(std::move(frames[0]));
                        else
                            px->stream->send_multipart(std::move(frames));
                        ++px->total;
                    }
                    if (to == per) {
                        px->stream->send_multipart(make_message({px->f->index, end_marker, 0, 1}));
                        ++px->total;
                        px->fed = true;
                    }
                };
                const int split = pick(0, per);
                queue(0, split);
                if (x.f->stream_feeder) {
                    // Outside the loop's callbacks: its sends go through the
                    // loop, or through these flushes.
                    feeders.emplace_back([this, px, queue, flush, split, per] {
                        const int fslot = this->slot();
                        try {
                            int seq = split;
                            do {
                                if (px->stream->closed())
                                    break; // the context went away
                                const int to = std::min(per, seq + pick(1, 5));
                                op(fslot, "zmq_stream feeder queues");
                                queue(seq, to);
                                seq = to;
                                if (chance(40))
                                    flush(*px, "zmq_stream flush from a fiber", fslot);
                                if (chance(50))
                                    boost::this_fiber::yield();
                                else
                                    boost::this_fiber::sleep_for(
                                        std::chrono::microseconds{pick(0, 300)});
                            } while (seq < per);
                        } catch (...) {
                            unexpected("zmq_stream feeder");
                        }
                        op(fslot, "done");
                    });
                } else {
                    loop.add_callback([this, px, queue, flush, split, per] {
                        if (px->stream->closed())
                            return;
                        queue(split, per);
                        if (chance(50))
                            flush(*px, "zmq_stream flush in a callback", -1);
                    });
                }
            }
            std::optional<green::periodic_callback> flusher;
            if (std::any_of(streams.begin(), streams.end(),
                            [](const sending& x) { return x.f->stream_flush_periodic; })) {
                flusher.emplace(loop, [&] {
                    for (auto& x : streams)
                        if (x.f->stream_flush_periodic && chance(50))
                            flush(x, "zmq_stream flush in a periodic callback", -1);
                }, std::chrono::milliseconds{pick(1, 5)});
                flusher->start();
            }
            if (sh.loop_thread == index) {
                loop.add_handler(sh.efd, [this, &efd_sum, &settle](short events) {
                    if (events & ZMQ_POLLERR)
                        sh.fail("eventfd handler: POLLERR");
                    std::uint64_t v = 0;
                    if (::read(sh.efd, &v, sizeof v) == sizeof v)
                        efd_sum += static_cast<int>(v);
                    if (efd_sum == sh.efd_writes)
                        settle();
                }, ZMQ_POLLIN);
                sh.loop_running = true;
            }
            green::periodic_callback check(loop, settle, 1ms);
            if (may_go)
                check.start();
            settle(); // nothing to do, or a device already gone
            op(slot, "io_loop runs");
            loop.start();
            op(slot, "io_loop stopped");
            if (sh.loop_thread == index) {
                sh.loop_running = false;
                loop.remove_handler(sh.efd);
            }
            if (!sh.fallback_off && loop.stats().rescues != 0)
                sh.fail("the io_loop's fallback re-check rescued "
                        + std::to_string(loop.stats().rescues) + " handlers");
            check.stop();
            if (flusher)
                flusher->stop();
            for (auto& f : feeders)
                f.join();
            for (auto& x : streams)
                x.stream->close();
        });
    }

    void add_efd_writer()
    {
        fiber("eventfd writer", [this](int slot) {
            for (int i = 0; i < sh.efd_writes; ++i) {
                op(slot, "eventfd write");
                const std::uint64_t one = 1;
                if (::write(sh.efd, &one, sizeof one) != sizeof one)
                    sh.fail("eventfd write failed");
                if (chance(30))
                    boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 300)});
                else
                    boost::this_fiber::yield();
            }
        });
    }

    // ---- REQ/REP, XPUB/SUB across two threads ----

    void add_rep()
    {
        auto& rep = make(zmq::socket_type::rep);
        rep.bind(endpoint(chance(50), "rep"));
        sh.rep_ep = rep.get(zmq::sockopt::last_endpoint);
        fiber("rep", [this, &rep](int slot) {
            for (;;) {
                op(slot, "rep recv");
                zmq::message_t m;
                (void)rep.recv(m);
                const bool end = m.to_string() == "end";
                if (!end && chance(30))
                    boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 3000)});
                op(slot, "rep send");
                (void)rep.send(m, zmq::send_flags::none);
                if (end)
                    return;
            }
        });
    }

    void add_req()
    {
        auto& req = make(zmq::socket_type::req);
        req.set(zmq::sockopt::req_relaxed, 1);
        req.set(zmq::sockopt::req_correlate, 1);
        req.connect(sh.rep_ep);
        register_foreign(req);
        fiber("req", [this, &req](int slot) {
            const int n = pick(1, 30);
            for (int i = 0; i <= n; ++i) {
                // Relaxed: on a timeout, a new request; correlate: the old
                // one's late reply is dropped.
                for (int attempt = 0;; ++attempt) {
                    const std::string id =
                        i == n ? std::string("end")
                               : std::to_string(i) + "." + std::to_string(attempt);
                    op(slot, "req send");
                    (void)req.send(zmq::buffer(id));
                    req.set(zmq::sockopt::rcvtimeo, i == n ? -1 : pick(0, 5));
                    op(slot, "req recv");
                    zmq::message_t m;
                    if (!req.recv(m))
                        continue;
                    if (m.to_string() != id)
                        sh.fail("REQ_CORRELATE: sent " + id + ", got reply " + m.to_string());
                    break;
                }
            }
        });
    }

    void add_xpub()
    {
        auto& xpub = make(zmq::socket_type::xpub, 1);
        xpub.set(zmq::sockopt::xpub_nodrop, 1);
        xpub.bind(endpoint(chance(50), "xpub"));
        sh.xpub_ep = xpub.get(zmq::sockopt::last_endpoint);
        register_foreign(xpub);
        fiber("xpub", [this, &xpub](int slot) {
            op(slot, "xpub awaits its subscriber");
            zmq::message_t sub;
            (void)xpub.recv(sub);
            const int n = pick(1, 40);
            int sent = 0;
            for (int i = 0; i < n; ++i) {
                op(slot, "xpub send");
                // Blocking too: the subscriber reads until the count is known.
                xpub.set(zmq::sockopt::sndtimeo, chance(30) ? -1 : pick(0, 3));
                // NODROP: a full queue refuses (empty result), never drops.
                if (xpub.send(zmq::buffer(std::to_string(sent))))
                    ++sent;
            }
            sh.xpub_sent = sent;
        });
    }

    void add_sub()
    {
        auto& sub = make(zmq::socket_type::sub, 1);
        sub.set(zmq::sockopt::subscribe, "");
        sub.connect(sh.xpub_ep);
        fiber("sub", [this, &sub](int slot) {
            for (int next = 0;;) {
                op(slot, "sub recv");
                sub.set(zmq::sockopt::rcvtimeo, pick(0, 5));
                zmq::message_t m;
                if (sub.recv(m)) {
                    if (m.to_string() != std::to_string(next))
                        sh.fail("XPUB_NODROP: expected " + std::to_string(next) + ", got "
                                + m.to_string());
                    ++next;
                    if (chance(30))
                        boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 500)});
                } else if (sh.shut) {
                    return;
                } else if (sh.xpub_sent >= 0) {
                    // Everything queued has arrived: inproc and tcp alike
                    // deliver in a few ms once the sender is idle.
                    if (next == sh.xpub_sent)
                        return;
                    boost::this_fiber::sleep_for(1ms);
                }
            }
        });
    }

    // ---- tasks killed and timed out in sends and receives ----

    void add_kill_scenario()
    {
        auto& a = make(zmq::socket_type::push, 1);
        auto& b = make(zmq::socket_type::pull, 1);
        b.bind(endpoint(false, "kill"));
        a.connect(b.get(zmq::sockopt::last_endpoint));
        auto st = std::make_shared<kill_state>();
        kills.push_back(st);
        const int nsenders = pick(1, 4);
        const int per = pick(1, 30);
        st->completed.assign(static_cast<size_t>(nsenders), 0);
        st->killed.assign(static_cast<size_t>(nsenders), false);
        st->next.assign(static_cast<size_t>(nsenders), 0);
        fiber("kill scenario", [this, &a, &b, st, nsenders, per](int kslot) {
            auto sender = [this, &a, st, per](std::uint32_t id) {
                const int s = this->slot();
                try {
                    for (int seq = 0; seq < per;) {
                        auto frames = make_message(
                            {99, id, static_cast<std::uint32_t>(seq),
                             static_cast<std::uint32_t>(pick(1, 3))});
                        try {
                            std::optional<green::scoped_timeout> limit;
                            if (chance(30))
                                limit.emplace(std::chrono::microseconds{pick(0, 2000)});
                            if (chance(50)) {
                                op(s, "task send_multipart");
                                if (green::send_multipart(a, frames))
                                    st->completed[id] = ++seq;
                            } else {
                                // Frame by frame: a wait between two frames
                                // finishes the message before a kill or a
                                // timeout can stop the fiber.
                                op(s, "task send frame by frame");
                                a.set(zmq::sockopt::sndtimeo, -1);
                                for (size_t i = 0; i < frames.size(); ++i) {
                                    const bool more = i + 1 < frames.size();
                                    if (!a.send(frames[i], more ? zmq::send_flags::sndmore
                                                                : zmq::send_flags::none))
                                        sh.fail("a blocking frame send returned empty");
                                    if (more && chance(30))
                                        boost::this_fiber::yield();
                                }
                                st->completed[id] = ++seq;
                            }
                        } catch (const green::timeout_error&) {
                            op(s, "task send timed out");
                        }
                    }
                } catch (const green::fiber_cancelled&) {
                    st->killed[id] = true;
                    ++st->finished;
                    throw;
                } catch (const zmq::error_t& e) {
                    if (!documented(e))
                        unexpected("kill scenario sender");
                } catch (...) {
                    unexpected("kill scenario sender");
                }
                ++st->finished;
                op(s, "task sender done");
            };
            auto receiver = [this, &b, st, nsenders]() {
                const int s = this->slot();
                try {
                    for (;;) {
                        std::vector<zmq::message_t> frames;
                        b.set(zmq::sockopt::rcvtimeo, 5);
                        switch (pick(0, 3)) {
                        case 0:
                            op(s, "task recv_multipart");
                            (void)green::recv_multipart(b, std::back_inserter(frames));
                            break;
                        case 1:
                            op(s, "task socket poll");
                            (void)b.poll(ZMQ_POLLIN, std::chrono::milliseconds{pick(0, 5)});
                            break;
                        case 2: {
                            op(s, "task green::poll");
                            std::vector<zmq_pollitem_t> items{
                                {static_cast<void*>(b), 0, ZMQ_POLLIN, 0}};
                            (void)green::poll(items, std::chrono::milliseconds{pick(0, 5)});
                            break;
                        }
                        default: {
                            op(s, "task poller_t");
                            green::poller_t<> poller;
                            poller.add(b, green::event_flags::pollin);
                            std::vector<green::poller_event<>> events(1);
                            (void)poller.wait_all(events, std::chrono::milliseconds{pick(0, 5)});
                            break;
                        }
                        }
                        if (frames.empty())
                            (void)green::recv_multipart(b, std::back_inserter(frames),
                                                        zmq::recv_flags::dontwait);
                        if (frames.empty()) {
                            // Inproc: what was queued is there at once.
                            if (st->finished == nsenders)
                                return;
                            continue;
                        }
                        std::string why;
                        const auto h = parse(frames, 0, why);
                        if (!h || h->sender >= st->next.size()) {
                            sh.fail("kill scenario: " + (h ? std::string("bad sender") : why));
                            continue;
                        }
                        if (h->seq != static_cast<std::uint32_t>(st->next[h->sender]))
                            sh.fail("kill scenario: sender " + std::to_string(h->sender)
                                    + " expected seq " + std::to_string(st->next[h->sender])
                                    + ", got " + std::to_string(h->seq));
                        st->next[h->sender] = static_cast<int>(h->seq) + 1;
                        if (chance(20))
                            boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 300)});
                    }
                } catch (const zmq::error_t& e) {
                    if (!documented(e))
                        unexpected("kill scenario receiver");
                }
                op(s, "task receiver done");
            };
            st->receiver = green::spawn(receiver);
            // Maybe through a pool smaller than the senders: spawn parks
            // until one ends.
            std::optional<green::pool> pool;
            if (chance(50))
                pool.emplace(static_cast<std::size_t>(pick(1, nsenders)));
            for (int i = 0; i < nsenders; ++i) {
                op(kslot, "spawn a sender");
                auto body = [sender, i] { sender(static_cast<std::uint32_t>(i)); };
                st->senders.push_back(pool ? pool->spawn(body) : green::spawn(body));
            }
            // Kill senders and the receiver at random moments; a new
            // receiver takes over the socket.
            const int nkills = pick(0, 4);
            for (int k = 0; k < nkills; ++k) {
                op(kslot, "killer sleeps");
                boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 1500)});
                op(kslot, "killer kills");
                const int what = pick(0, 9);
                if (what < 5) {
                    st->senders[static_cast<size_t>(pick(0, nsenders - 1))].kill(chance(50));
                } else if (what == 5) {
                    (void)st->senders[static_cast<size_t>(pick(0, nsenders - 1))].join(
                        std::chrono::milliseconds{pick(0, 2)});
                } else if (what == 6 && pool) {
                    pool->kill(chance(50));
                } else {
                    st->receiver.kill();
                    st->receiver = green::spawn(receiver);
                }
            }
            op(kslot, "killer joins");
            if (!green::joinall(st->senders, 10s))
                sh.fail("kill scenario: senders did not end");
            if (!st->receiver.join(10s))
                sh.fail("kill scenario: receiver did not end");
            if (sh.shut)
                return;
            for (int i = 0; i < nsenders; ++i) {
                const auto& t = st->senders[static_cast<size_t>(i)];
                if (t.exception())
                    sh.fail("kill scenario: a sender failed");
                const int got = st->next[static_cast<size_t>(i)];
                const int done = st->completed[static_cast<size_t>(i)];
                // A killed send either completed, and its call returned, or
                // never started: a kill raised after libzmq took the message
                // would leave one more received than completed.
                if (got != done) {
                    // Left in the socket, or lost?
                    std::string left;
                    for (int k = 0; k < 10; ++k) {
                        std::vector<zmq::message_t> frames;
                        b.set(zmq::sockopt::rcvtimeo, 10);
                        if (!green::recv_multipart(b, std::back_inserter(frames)))
                            continue;
                        std::string why;
                        const auto h = parse(frames, 0, why);
                        left += h ? " " + std::to_string(h->sender) + ":" + std::to_string(h->seq)
                                  : " ?" + why;
                    }
                    sh.fail("kill scenario: sender " + std::to_string(i) + " completed "
                            + std::to_string(done) + ", received " + std::to_string(got)
                            + (st->killed[static_cast<size_t>(i)] ? " (killed)" : "")
                            + "; left in the socket:" + left);
                }
            }
        });
    }

    // ---- foreign-thread use ----

    void register_foreign(green::socket_t& s)
    {
        if (waits_for_threads(sh.brk))
            return; // closed by their owner (or destroy()) while others look
        std::lock_guard<std::mutex> lock(sh.foreign_mutex);
        sh.foreign.emplace_back(index, &s);
    }

    void add_foreign_user()
    {
        fiber("foreign user", [this](int slot) {
            const int tries = pick(1, 10);
            for (int i = 0; i < tries; ++i) {
                green::socket_t* s = nullptr;
                {
                    std::lock_guard<std::mutex> lock(sh.foreign_mutex);
                    std::vector<green::socket_t*> theirs;
                    for (auto& [owner, sock] : sh.foreign)
                        if (owner != index)
                            theirs.push_back(sock);
                    if (theirs.empty())
                        return;
                    s = theirs[static_cast<size_t>(pick(0, static_cast<int>(theirs.size()) - 1))];
                }
                op(slot, "foreign use");
                if (chance(10)) {
                    // Documented: left open, with a message; its owner goes on.
                    op(slot, "foreign close");
                    s->close();
                    continue;
                }
                try {
                    zmq::message_t m;
                    switch (pick(0, 3)) {
                    case 0: (void)s->send(zmq::str_buffer("x"), zmq::send_flags::dontwait); break;
                    case 1: (void)s->recv(m, zmq::recv_flags::dontwait); break;
                    case 2: (void)s->poll(ZMQ_POLLIN, 1ms); break;
                    default: (void)s->get(zmq::sockopt::events); break;
                    }
                    sh.fail("a foreign thread used a socket without thread_error");
                } catch (const green::thread_error&) {
                }
                boost::this_fiber::sleep_for(std::chrono::microseconds{pick(0, 500)});
            }
        });
    }

    // ---- the thread ----

    void run()
    {
        auto& hub = green::hub::current();
        hub.set_fallback_interval(sh.fallback_off ? 0ms : 50ms);
        const auto rescues_before = hub.stats().rescues;
        try {
            // Phase 1: what others connect to.
            for (auto& fp : sh.flows) {
                flow& f = *fp;
                if ((f.device == dev::none || f.connect_out) && f.receiver_thread == index) {
                    auto& s = make(f.in_type, f.hwm);
                    s.bind(endpoint(f.tcp, "flow"));
                    (f.connect_out ? f.out_ep : f.in_ep) = s.get(zmq::sockopt::last_endpoint);
                    add_receiver(f, s);
                }
                if (f.device != dev::none && f.device_thread == index) {
                    if (threaded(f.device))
                        add_thread_device(f);
                    else
                        add_green_device(f);
                }
            }
            if (sh.rep_thread == index)
                add_rep();
            if (sh.xpub_thread == index)
                add_xpub();
        } catch (...) {
            unexpected("phase 1");
        }
        sh.bound->arrive_and_wait();
        try {
            // Phase 2: connect.
            connect_devices_out();
            for (auto& fp : sh.flows) {
                flow& f = *fp;
                for (size_t i = 0; i < f.sender_threads.size(); ++i)
                    if (f.sender_threads[i] == index)
                        add_sender(f, static_cast<std::uint32_t>(i));
                if (f.device != dev::none && !f.connect_out && f.receiver_thread == index) {
                    auto& s = make(f.in_type, f.hwm);
                    s.connect(f.out_ep);
                    add_receiver(f, s);
                }
            }
            if (sh.req_thread == index)
                add_req();
            if (sh.sub_thread == index)
                add_sub();
            add_loop();
            if (sh.efd_writer_thread == index)
                add_efd_writer();
            if (sh.kills_only) {
                for (int n = pick(1, 2); n > 0; --n)
                    add_kill_scenario();
            } else {
                if (chance(40))
                    add_kill_scenario();
                if (chance(40))
                    add_foreign_user();
            }
        } catch (...) {
            unexpected("phase 2");
        }
        // Not among the bodies: close() parks until this thread's sockets
        // are closed too, which happens once the other fibers are done.
        std::function<void()> breaker_body;
        if (sh.brk != breaker::none && sh.brk != breaker::shutdown_thread) {
            if (sh.breaker_thread == index)
                breaker_body = [this] {
                    const int slot = this->slot();
                    op(slot, "breaker sleeps");
                    boost::this_fiber::sleep_for(std::chrono::microseconds{sh.breaker_delay_us});
                    sh.shut = true;
                    try {
                        switch (sh.brk) {
                        case breaker::shutdown_fiber:
                            op(slot, "breaker shutdown");
                            sh.ctx.shutdown();
                            break;
                        case breaker::destroy:
                            op(slot, "breaker destroy");
                            sh.ctx.destroy(0ms);
                            break;
                        case breaker::close:
                            op(slot, "breaker close");
                            sh.ctx.close();
                            break;
                        default: {
                            boost::fibers::fiber closer([this] { sh.ctx.close(); });
                            op(slot, "breaker destroy during close");
                            sh.ctx.destroy();
                            closer.join();
                            break;
                        }
                        }
                    } catch (...) {
                        unexpected("breaker");
                    }
                    op(slot, "breaker done");
                };
        }
        sh.connected->arrive_and_wait();
        std::optional<boost::fibers::fiber> breaker_fiber;
        if (breaker_body)
            breaker_fiber.emplace(breaker_body);
        {
            std::vector<boost::fibers::fiber> fibers;
            for (auto& b : bodies)
                fibers.emplace_back(b);
            for (auto& f : fibers)
                f.join();
        }
        for (auto& d : thread_devices)
            d->stop();
        // Others may look at this thread's sockets until then; but close()
        // and destroy() park until every thread has closed them, and then
        // nobody looks.
        if (!waits_for_threads(sh.brk))
            sh.finished->arrive_and_wait();
        for (auto& s : sockets)
            s.close();
        if (breaker_fiber)
            breaker_fiber->join();
        if (!sh.fallback_off && hub.stats().rescues != rescues_before)
            sh.fail("thread " + std::to_string(index) + ": the fallback re-check rescued "
                    + std::to_string(hub.stats().rescues - rescues_before) + " waits");
    }
};

void run_seed(std::uint32_t seed)
{
    begin_seed(seed);
    std::mt19937 rng(seed);
    auto pick = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    auto chance = [&pick](int percent) { return pick(0, 99) < percent; };

    shared sh;
    sh.seed = seed;
    sh.nthreads = pick(2, 3);
    sh.fallback_off = chance(50);
    sh.kills_only = std::getenv("ZMQ_GREEN_TORTURE_KILL") != nullptr;
    const int nflows = sh.kills_only ? 0 : pick(1, 4);
    for (int i = 0; i < nflows; ++i) {
        auto f = std::make_unique<flow>();
        f->index = static_cast<std::uint32_t>(i);
        f->device = chance(50) ? dev::none : static_cast<dev>(pick(1, 7));
        if (f->device == dev::thread_device) {
            static const int types[] = {ZMQ_STREAMER, ZMQ_FORWARDER, ZMQ_QUEUE};
            f->device_type = types[pick(0, 2)];
            f->router_in = f->device_type == ZMQ_QUEUE && chance(50);
            if (f->router_in)
                f->out_type = f->in_type = zmq::socket_type::dealer;
            f->connect_out = chance(50);
        } else if (f->device == dev::none) {
            switch (pick(0, 2)) {
            case 0: break;
            case 1:
                f->out_type = zmq::socket_type::dealer;
                f->in_type = zmq::socket_type::router;
                break;
            default:
                f->out_type = f->in_type = zmq::socket_type::pair;
                break;
            }
        }
        f->tcp = threaded(f->device) || chance(40);
        f->receiver_thread = pick(0, sh.nthreads - 1);
        f->device_thread = pick(0, sh.nthreads - 1);
        const int nsenders = f->in_type == zmq::socket_type::pair ? 1 : pick(1, 3);
        for (int s = 0; s < nsenders; ++s)
            f->sender_threads.push_back(pick(0, sh.nthreads - 1));
        f->per_sender = pick(1, 40);
        f->hwm = chance(30) ? pick(1, 4) : 0;
        if (threaded(f->device) && chance(30))
            f->stop_early_us = pick(0, 3000);
        f->start_late = threaded(f->device) && chance(50);
        f->stream_sender = nsenders == 1 && f->in_type != zmq::socket_type::pair && chance(40);
        if (f->stream_sender) {
            f->stream_frames = pick(0, 2);
            f->stream_feeder = chance(50);
            f->stream_flush_on_send = chance(50) ? pick(10, 100) : 0;
            f->stream_flush_periodic = chance(50);
            f->stream_on_recv = f->out_type == zmq::socket_type::dealer && chance(50);
        }
        f->next.assign(static_cast<size_t>(nsenders), 0);
        sh.flows.push_back(std::move(f));
    }
    if (!sh.kills_only && chance(40)) {
        sh.rep_thread = pick(0, sh.nthreads - 1);
        sh.req_thread = (sh.rep_thread + pick(1, sh.nthreads - 1)) % sh.nthreads;
    }
    if (!sh.kills_only && chance(40)) {
        sh.xpub_thread = pick(0, sh.nthreads - 1);
        sh.sub_thread = (sh.xpub_thread + pick(1, sh.nthreads - 1)) % sh.nthreads;
    }
    sh.brk = chance(50) ? breaker::none : static_cast<breaker>(pick(1, 5));
    if (!sh.kills_only && chance(40)) {
        sh.loop_thread = pick(0, sh.nthreads - 1);
        sh.efd_writer_thread = pick(0, sh.nthreads - 1);
        sh.efd_writes = pick(1, 50);
        sh.efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
    sh.breaker_thread = pick(0, sh.nthreads - 1);
    sh.breaker_delay_us = pick(0, 3000);
    sh.bound = std::make_unique<latch>(sh.nthreads);
    // The bare shutdown thread starts with the fibers.
    sh.connected = std::make_unique<latch>(sh.nthreads + (sh.brk == breaker::shutdown_thread));
    sh.finished = std::make_unique<latch>(sh.nthreads);

    if (std::getenv("ZMQ_GREEN_TORTURE_VERBOSE")) {
        std::cerr << "  threads " << sh.nthreads << ", fallback "
                  << (sh.fallback_off ? "off" : "on")
                  << ", breaker " << static_cast<int>(sh.brk) << " on " << sh.breaker_thread
                  << " after " << sh.breaker_delay_us << " us, req " << sh.req_thread << ", xpub "
                  << sh.xpub_thread << ", loop " << sh.loop_thread << " (" << sh.efd_writes
                  << " eventfd writes from " << sh.efd_writer_thread << ")\n";
        for (auto& f : sh.flows) {
            std::cerr << "  flow " << f->index << " " << static_cast<int>(f->out_type) << "->"
                      << static_cast<int>(f->in_type) << (f->tcp ? " tcp" : " inproc") << " via "
                      << dev_name(f->device) << " on " << f->device_thread << ", senders "
                      << f->sender_threads.size() << " x" << f->per_sender << ", stop early "
                      << f->stop_early_us << (f->start_late ? ", started late" : "");
            if (f->device == dev::thread_device)
                std::cerr << ", type " << f->device_type << (f->router_in ? ", ROUTER in" : "")
                          << (f->connect_out ? ", connects out" : "");
            if (f->stream_sender)
                std::cerr << ", zmq_stream sender: frames " << f->stream_frames << ", feeder "
                          << f->stream_feeder << ", flush on send " << f->stream_flush_on_send
                          << "%, periodic flush " << f->stream_flush_periodic << ", on_recv "
                          << f->stream_on_recv;
            std::cerr << "\n";
        }
    }
    dump_state = [&sh] {
        {
            std::lock_guard<std::mutex> lock(sh.failures_mutex);
            for (const auto& f : sh.failures)
                std::cerr << "  failure: " << f << "\n";
        }
        for (auto& f : sh.flows) {
            std::cerr << "  flow " << f->index << " (" << dev_name(f->device) << "): done "
                      << f->done << ", abandoned " << f->abandoned << ", next";
            for (auto n : f->next)
                std::cerr << " " << n;
            std::cerr << "\n";
        }
    };

    std::vector<std::unique_ptr<worker>> workers;
    for (int i = 0; i < sh.nthreads; ++i)
        workers.push_back(std::make_unique<worker>(sh, i));
    auto dump_flows = std::move(dump_state);
    dump_state = [&workers, dump_flows] {
        dump_flows();
        for (auto& w : workers)
            for (auto& k : w->kills) {
                std::cerr << "  thread " << w->index << " kill scenario: finished " << k->finished
                          << " of " << k->senders.size()
                          << "; per sender completed/received/killed:";
                for (size_t i = 0; i < k->completed.size(); ++i)
                    std::cerr << " " << k->completed[i] << "/" << k->next[i] << "/"
                              << k->killed[i];
                std::cerr << "\n";
            }
    };
    std::vector<std::thread> threads;
    for (auto& w : workers)
        threads.emplace_back([&w] { w->run(); });
    std::thread shutter;
    if (sh.brk == breaker::shutdown_thread)
        shutter = std::thread([&sh] {
            sh.connected->arrive_and_wait();
            std::this_thread::sleep_for(std::chrono::microseconds{sh.breaker_delay_us});
            sh.shut = true;
            sh.ctx.shutdown();
        });
    for (auto& t : threads)
        t.join();
    if (shutter.joinable())
        shutter.join();
    dump_state = nullptr;

    if (!sh.shut)
        for (auto& f : sh.flows) {
            if (f->broken)
                continue;
            for (size_t s = 0; s < f->next.size(); ++s)
                if (f->next[s] != static_cast<std::uint32_t>(f->per_sender))
                    sh.fail("flow " + std::to_string(f->index) + " (" + dev_name(f->device)
                            + ") sender " + std::to_string(s) + ": " + std::to_string(f->next[s])
                            + " of " + std::to_string(f->per_sender));
        }
    if (sh.efd >= 0)
        ::close(sh.efd);
    for (const auto& f : sh.failures)
        ADD_FAILURE() << "seed " << seed << ": " << f;
}

} // namespace

TEST(torture_threads, random_operations_across_threads)
{
    run_seeds(run_seed);
}
