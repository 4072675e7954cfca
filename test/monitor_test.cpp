// monitor_t: cppzmq's socket monitor, waiting in a fiber.
#include "support.hpp"

#include <functional>
#include <string>
#include <thread>
#include <utility>

namespace green = zmq::green;
using namespace std::chrono_literals;

namespace {

struct recording_monitor : green::monitor_t {
    std::vector<std::pair<int, std::string>> events;
    bool started = false;

    void on_monitor_started() override { started = true; }
    void on_event_listening(const zmq_event_t& e, const char* addr) override { record(e, addr); }
    void on_event_accepted(const zmq_event_t& e, const char* addr) override { record(e, addr); }
    void on_event_handshake_succeeded(const zmq_event_t& e, const char* addr) override
    {
        record(e, addr);
    }
    void on_event_disconnected(const zmq_event_t& e, const char* addr) override
    {
        record(e, addr);
    }

    void record(const zmq_event_t& e, const char* addr) { events.emplace_back(e.event, addr); }
    bool seen(int event) const
    {
        return std::any_of(events.begin(), events.end(),
                           [event](const auto& e) { return e.first == event; });
    }
};

void wait_started(const recording_monitor& m)
{
    while (!m.started)
        boost::this_fiber::yield();
}

// Runs mon.monitor(s) in one fiber and, once it has started, act in another.
// Returns what monitor() threw, or "" when it returned.
std::string monitor_until(recording_monitor& mon, green::socket_t& s,
                          const std::function<void()>& act, int events = ZMQ_EVENT_ALL)
{
    std::string threw;
    test::run_fibers({[&] {
                          try {
                              mon.monitor(s, test::unique_inproc(), events);
                          } catch (const std::exception& e) {
                              threw = e.what();
                          }
                      },
                      [&] {
                          wait_started(mon);
                          act();
                      }});
    return threw;
}

} // namespace

// The monitor's fiber parks in check_event while the thread's other fibers
// bind, connect and talk: a check_event that blocked the thread in zmq_poll
// would see no event ever.
TEST(monitor, check_event_parks_only_its_fiber_and_reports_each_event)
{
    green::context_t ctx;
    green::socket_t server(ctx, zmq::socket_type::pair), client(ctx, zmq::socket_type::pair);
    server.set(zmq::sockopt::linger, 0);
    client.set(zmq::sockopt::linger, 0);
    recording_monitor mon;
    mon.init(server, test::unique_inproc());
    EXPECT_TRUE(mon.started);
    std::string endpoint;
    std::string got;
    test::run_fibers({[&] {
                          while (!mon.seen(ZMQ_EVENT_HANDSHAKE_SUCCEEDED))
                              ASSERT_TRUE(mon.check_event(-1));
                      },
                      [&] {
                          server.bind("tcp://127.0.0.1:*");
                          endpoint = server.get(zmq::sockopt::last_endpoint);
                          client.connect(endpoint);
                          client.send(zmq::str_buffer("hello"));
                          zmq::message_t m;
                          EXPECT_TRUE(server.recv(m));
                          got = m.to_string();
                      }});
    EXPECT_EQ(got, "hello");
    ASSERT_FALSE(mon.events.empty());
    EXPECT_EQ(mon.events.front().first, ZMQ_EVENT_LISTENING);
    EXPECT_EQ(mon.events.front().second, endpoint);
    EXPECT_TRUE(mon.seen(ZMQ_EVENT_ACCEPTED));

    // The peer going away is an event too.
    client.close();
    while (!mon.seen(ZMQ_EVENT_DISCONNECTED))
        ASSERT_TRUE(mon.check_event(-1));
}

TEST(monitor, check_event_without_an_event_returns_false)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    green::monitor_t mon;
    mon.init(s, test::unique_inproc());
    EXPECT_FALSE(mon.check_event());
    EXPECT_FALSE(mon.check_event(5));
    try {
        (void)mon.check_event(-2);
        ADD_FAILURE() << "timeout -2 accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("check_event"), std::string::npos) << e.what();
    }
}

// cppzmq's monitor() never returns; here it ends with the events.
TEST(monitor, monitor_returns_once_aborted)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    recording_monitor mon;
    EXPECT_EQ(monitor_until(mon, s,
                            [&] {
                                s.bind("tcp://127.0.0.1:*"); // an event before the stop
                                mon.abort();
                            }),
              "");
    EXPECT_TRUE(mon.seen(ZMQ_EVENT_LISTENING));
    EXPECT_FALSE(mon.check_event(-1)); // stopped: at once
    s.set(zmq::sockopt::linger, 0);
}

// The events end when the socket closes; the monitor still holds on to the
// closed socket's state and must not touch the freed libzmq socket.
TEST(monitor, monitor_returns_when_the_socket_closes)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    recording_monitor mon;
    EXPECT_EQ(monitor_until(mon, s, [&] { s.close(); }, ZMQ_EVENT_LISTENING), "");
    EXPECT_NO_THROW(mon.abort());
}

TEST(monitor, check_event_returns_false_when_the_context_shuts_down)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    recording_monitor mon;
    mon.init(s, test::unique_inproc());
    bool result = true;
    test::run_fibers({[&] { result = mon.check_event(-1); }, [&] { ctx.shutdown(); }});
    EXPECT_FALSE(result);
}

// The monitor's socket outlives nothing: once the context shut down, the
// monitor lets it go, or a monitor that outlives the context would hold its
// close() for ever.
TEST(monitor, a_monitor_that_saw_the_context_shut_down_does_not_hold_up_its_close)
{
    recording_monitor mon; // outlives the context
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    mon.init(s, test::unique_inproc());
    bool first = true;
    test::run_fibers({[&] {
                          first = mon.check_event(-1);
                          s.close();
                      },
                      [&] { ctx.close(); }});
    EXPECT_FALSE(first);
    EXPECT_FALSE(mon.check_event(-1)); // stopped: at once
}

// destroy() closes the monitor's own socket too: the monitor ends there as
// it does on a shutdown, where its fiber would have met ENOTSOCK.
TEST(monitor, monitor_returns_when_the_context_is_destroyed)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    recording_monitor mon;
    EXPECT_EQ(monitor_until(mon, s, [&] { ctx.destroy(0ms); }), "");
    EXPECT_FALSE(mon.check_event(-1));
}

TEST(monitor, a_moved_monitor_goes_on_reporting)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    s.set(zmq::sockopt::linger, 0);
    green::monitor_t first;
    first.init(s, test::unique_inproc());
    green::monitor_t second(std::move(first));
    EXPECT_THROW(first.check_event(), std::logic_error);
    s.bind("tcp://127.0.0.1:*");
    EXPECT_TRUE(second.check_event(-1)); // the listening event
}

TEST(monitor, BadInput_misuse_is_a_clear_error)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    green::monitor_t mon;
    try {
        (void)mon.check_event();
        ADD_FAILURE() << "check_event before init";
    } catch (const std::logic_error& e) {
        EXPECT_NE(std::string(e.what()).find("init"), std::string::npos) << e.what();
    }
    auto init_errno = [&](green::socket_t& sock, const char* addr) {
        try {
            mon.init(sock, addr);
        } catch (const zmq::error_t& e) {
            return e.num();
        }
        return 0;
    };
    EXPECT_EQ(init_errno(s, "tcp://127.0.0.1:5555"), EPROTONOSUPPORT);
    EXPECT_EQ(init_errno(s, nullptr), EINVAL);
    green::socket_t closed(ctx, zmq::socket_type::pair);
    closed.close();
    EXPECT_EQ(init_errno(closed, "inproc://monitor-of-a-closed-socket"), ENOTSOCK);
    EXPECT_THROW(mon.check_event(), std::logic_error); // no init succeeded
}

TEST(monitor, BadInput_another_threads_socket_is_a_thread_error)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    green::monitor_t mine;
    mine.init(s, test::unique_inproc());
    std::thread([&] {
        green::monitor_t theirs;
        EXPECT_THROW(theirs.init(s, test::unique_inproc()), green::thread_error);
        EXPECT_THROW(mine.abort(), green::thread_error);
    }).join();
    mine.abort();
    EXPECT_FALSE(mine.check_event(-1));
}

// Assigning to a monitor closes its socket: refused on a foreign thread, as
// for a socket_t, with the monitor left running for its own thread.
TEST(monitor, BadInput_assignment_on_a_foreign_thread_is_a_thread_error)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    s.set(zmq::sockopt::linger, 0);
    recording_monitor mon;
    mon.init(s, test::unique_inproc());
    std::thread([&] {
        EXPECT_THROW(static_cast<green::monitor_t&>(mon) = green::monitor_t(), green::thread_error);
    }).join();
    s.bind("tcp://127.0.0.1:*");
    ASSERT_TRUE(mon.check_event(-1)); // still running
    EXPECT_TRUE(mon.seen(ZMQ_EVENT_LISTENING));
    mon.abort();
    EXPECT_FALSE(mon.check_event(-1));
}

// Another fiber's init() ends the monitor a fiber waits in; the new one
// goes on.
TEST(monitor, init_in_another_fiber_ends_the_wait_and_the_new_monitor_reports)
{
    green::context_t ctx;
    green::socket_t first(ctx, zmq::socket_type::pair), second(ctx, zmq::socket_type::pair);
    second.set(zmq::sockopt::linger, 0);
    recording_monitor mon;
    EXPECT_EQ(monitor_until(mon, first, [&] { mon.init(second, test::unique_inproc()); }), "");
    second.bind("tcp://127.0.0.1:*");
    EXPECT_TRUE(mon.check_event(-1));
    EXPECT_TRUE(mon.seen(ZMQ_EVENT_LISTENING));
}

// libzmq keeps one monitor per socket: the replaced one's events end, and
// its going must not end the newer one's.
TEST(monitor, a_replaced_monitor_going_leaves_the_newer_one_running)
{
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    s.set(zmq::sockopt::linger, 0);
    recording_monitor newer;
    {
        recording_monitor replaced;
        replaced.init(s, test::unique_inproc());
        newer.init(s, test::unique_inproc());
        EXPECT_FALSE(replaced.check_event(-1)); // stopped by the newer one
    }
    s.bind("tcp://127.0.0.1:*");
    EXPECT_TRUE(newer.check_event(-1));
    EXPECT_TRUE(newer.seen(ZMQ_EVENT_LISTENING));
    newer.abort();
    EXPECT_FALSE(newer.check_event(-1)); // its own abort still stops it
}

// Nobody reads this monitor's events: its socket, which the user cannot
// close, must not keep the monitored socket's close() or the context's
// close() waiting.
TEST(monitor, a_monitor_nobody_reads_does_not_hold_up_the_close_of_its_context)
{
    recording_monitor mon; // outlives the context
    green::context_t ctx;
    green::socket_t s(ctx, zmq::socket_type::pair);
    s.set(zmq::sockopt::linger, 0);
    mon.init(s, test::unique_inproc());
    s.bind("tcp://127.0.0.1:*"); // an event nobody reads
    bool socket_closed = false;
    bool closed = false;
    green::task closer = green::spawn([&] {
        s.close();
        socket_closed = true;
        ctx.close();
        closed = true;
    });
    const bool done = closer.join(10s); // a hang guard
    EXPECT_TRUE(done) << "the context's close() waits for the monitor's socket";
    if (!done)
        ctx.destroy(); // closes the monitor's socket: the close() ends
    closer.join();
    EXPECT_TRUE(socket_closed);
    EXPECT_TRUE(closed);
    EXPECT_FALSE(mon.check_event(-1)); // stopped: at once
}
