#include "support.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <memory>

#include <thread>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

struct inproc_pair {
    explicit inproc_pair(green::context_t& ctx, zmq::socket_type a = zmq::socket_type::push,
                         zmq::socket_type b = zmq::socket_type::pull)
        : out(ctx, a), in(ctx, b)
    {
        const auto ep = test::unique_inproc();
        in.bind(ep);
        out.connect(ep);
    }
    green::socket_t out;
    green::socket_t in;
};

using timeout_test = test::green_test;

} // namespace

TEST_F(timeout_test, a_blocked_recv_ends_with_timeout_error_and_the_socket_stays_usable)
{
    inproc_pair p(ctx);
    zmq::message_t m;
    try {
        green::scoped_timeout limit(10ms);
        (void)p.in.recv(m);
        FAIL() << "recv returned inside an expired scope";
    } catch (const green::timeout_error&) {
    }
    p.out.send(zmq::str_buffer("after"));
    ASSERT_TRUE(p.in.recv(m));
    EXPECT_EQ(test::str(m), "after");
}

TEST_F(timeout_test, nested_scopes_the_earliest_deadline_wins)
{
    inproc_pair p(ctx);
    zmq::message_t m;
    bool outer_fired = false;
    try {
        green::scoped_timeout outer(10ms);
        try {
            green::scoped_timeout inner(1h);
            (void)p.in.recv(m);
        } catch (const green::timeout_error&) {
            // Not the inner scope's: pass it on, as gevent code re-raises a
            // Timeout that is not its own.
            EXPECT_TRUE(outer.expired());
            throw;
        }
    } catch (const green::timeout_error&) {
        outer_fired = true;
    }
    EXPECT_TRUE(outer_fired);

    green::scoped_timeout outer(1h);
    green::scoped_timeout inner(10ms);
    EXPECT_THROW((void)p.in.recv(m), green::timeout_error);
    EXPECT_TRUE(inner.expired());
    EXPECT_FALSE(outer.expired());
}

TEST_F(timeout_test, a_finished_scope_leaves_later_waits_alone)
{
    inproc_pair p(ctx);
    {
        green::scoped_timeout limit(1ms);
    }
    green::sleep_for(20ms); // well past the old deadline
    p.in.set(zmq::sockopt::rcvtimeo, 20);
    zmq::message_t m;
    EXPECT_FALSE(p.in.recv(m)); // the socket's own timeout: EAGAIN, not timeout_error
}

// Scopes held by pointers may end out of order: the deadline left is the
// earliest of the scopes still alive, never that of one that has ended.
// (In a task, whose state outlives the scopes.)
TEST_F(timeout_test, scopes_ended_out_of_order_leave_the_deadline_of_those_alive)
{
    green::spawn([] {
        auto expired = std::make_unique<green::scoped_timeout>(green::scoped_timeout::clock::now());
        auto late = std::make_unique<green::scoped_timeout>(1h);
        EXPECT_THROW(green::sleep_for(1h), green::timeout_error);
        expired.reset();
        EXPECT_NO_THROW(green::sleep_for(1ms)); // only the late scope is left
        late.reset();
        EXPECT_NO_THROW(green::sleep_for(1ms)); // and then none
    }).join();
}

TEST_F(timeout_test, the_sockets_own_timeout_still_wins_when_earlier)
{
    inproc_pair p(ctx);
    p.in.set(zmq::sockopt::rcvtimeo, 10);
    green::scoped_timeout limit(1h);
    zmq::message_t m;
    EXPECT_FALSE(p.in.recv(m));
}

TEST_F(timeout_test, code_that_does_not_wait_is_not_interrupted)
{
    inproc_pair p(ctx);
    green::scoped_timeout limit(0ms);
    zmq::message_t m;
    EXPECT_FALSE(p.in.recv(m, zmq::recv_flags::dontwait));
    EXPECT_TRUE(p.out.send(zmq::str_buffer("x")));
    EXPECT_TRUE(p.in.recv(m)); // ready: no wait, no timeout
    EXPECT_THROW((void)p.in.recv(m), green::timeout_error);
}

TEST_F(timeout_test, a_multipart_send_completes_or_never_starts)
{
    inproc_pair p(ctx);
    p.out.set(zmq::sockopt::sndhwm, 1);
    p.in.set(zmq::sockopt::rcvhwm, 1);
    const test::strings msg{"a", "b", "c"};
    int queued = 0;
    for (;;) {
        std::vector<zmq::const_buffer> bufs;
        for (const auto& part : msg)
            bufs.push_back(zmq::buffer(part));
        if (!green::send_multipart(p.out, bufs, zmq::send_flags::dontwait))
            break;
        ++queued;
    }
    {
        green::scoped_timeout limit(10ms);
        EXPECT_THROW(test::send_strs(p.out, msg), green::timeout_error);
    }
    for (int i = 0; i < queued; ++i)
        EXPECT_EQ(test::recv_strs(p.in), msg);
    test::send_strs(p.out, {"last"}); // the send direction was released
    EXPECT_EQ(test::recv_strs(p.in), test::strings{"last"});
}

TEST_F(timeout_test, poll_fd_waits_and_sleeps_are_green_waits)
{
    inproc_pair p(ctx);
    green::scoped_timeout limit(10ms);
    zmq_pollitem_t item{p.in.handle(), 0, ZMQ_POLLIN, 0};
    EXPECT_THROW(green::poll(&item, 1), green::timeout_error);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    EXPECT_THROW(green::wait_readable(fds[0]), green::timeout_error);
    ::close(fds[0]);
    ::close(fds[1]);
    EXPECT_THROW(green::sleep_for(1h), green::timeout_error);
}

TEST_F(timeout_test, io_loop_run_sync_and_devices_end_with_timeout_error)
{
    green::io_loop loop;
    inproc_pair p(ctx);
    green::event release;
    {
        green::scoped_timeout limit(10ms);
        EXPECT_THROW(loop.run_sync([&] { release.wait(); }), green::timeout_error);
    }
    release.set(); // the function's fiber runs on and ends
    loop.run_sync([] {}); // the loop runs again
    inproc_pair q(ctx);
    green::scoped_timeout limit(10ms);
    EXPECT_THROW(green::proxy(p.in, q.out), green::timeout_error);
}

TEST_F(timeout_test, other_fibers_are_not_affected)
{
    inproc_pair limited(ctx), free(ctx);
    std::string got;
    test::run_fibers({[&] {
                          green::scoped_timeout limit(10ms);
                          zmq::message_t m;
                          EXPECT_THROW((void)limited.in.recv(m), green::timeout_error);
                          free.out.send(zmq::str_buffer("go"));
                      },
                      [&] {
                          zmq::message_t m;
                          ASSERT_TRUE(free.in.recv(m));
                          got = test::str(m);
                      }});
    EXPECT_EQ(got, "go");
}

TEST_F(timeout_test, bad_input_negative_durations_are_rejected)
{
    EXPECT_THROW(green::scoped_timeout(-1ms), std::invalid_argument);
    EXPECT_THROW(green::sleep_for(-1ms), std::invalid_argument);
    zmq_pollitem_t none{nullptr, -1, 0, 0};
    EXPECT_THROW(green::poll(&none, 0, -2ms), std::invalid_argument);
}

// Past the clock's range (some 292 years of nanoseconds) a duration means
// "never", as a wait's timeout does, not an overflow into the past.
TEST_F(timeout_test, BadInput_huge_durations_never_expire)
{
    {
        green::scoped_timeout forever(std::chrono::hours::max());
        EXPECT_EQ(forever.deadline(), std::chrono::steady_clock::time_point::max());
        green::event never_set;
        EXPECT_FALSE(never_set.wait(1ms)); // the wait's own timeout, not the scope's
    }
    EXPECT_EQ(green::scoped_timeout(std::chrono::duration<double>(1e300)).deadline(),
              std::chrono::steady_clock::time_point::max());
    green::task sleeper = green::spawn([] { green::sleep_for(std::chrono::milliseconds::max()); });
    green::sleep_for(1ms); // the sleeper parks, and the hub runs its deadlines
    EXPECT_FALSE(sleeper.ready()) << "the sleep ended at once";
    sleeper.kill();
    EXPECT_TRUE(sleeper.killed());
}

// Any Rep and Period: a narrow or unsigned type, a floating one finer than
// nanoseconds, each either an ordinary timeout or "never", never wrapped.
TEST_F(timeout_test, BadInput_durations_of_any_representation_keep_their_value)
{
    using std::chrono::duration;
    const auto never = std::chrono::steady_clock::time_point::max();
    const auto about = [](std::chrono::steady_clock::time_point deadline, std::chrono::seconds s) {
        const auto left = deadline - std::chrono::steady_clock::now();
        return left > s - 1s && left <= s;
    };
    EXPECT_TRUE(about(green::scoped_timeout(duration<int, std::centi>(100)).deadline(), 1s));
    EXPECT_TRUE(about(green::scoped_timeout(duration<std::int16_t>(100)).deadline(), 100s));
    EXPECT_TRUE(about(green::scoped_timeout(duration<std::uint8_t, std::ratio<60>>(2)).deadline(), 120s));
    EXPECT_EQ(green::scoped_timeout(duration<std::uint64_t, std::nano>(UINT64_MAX)).deadline(), never);
    EXPECT_EQ(green::scoped_timeout(duration<double, std::nano>(1e300)).deadline(), never);
    EXPECT_EQ(green::scoped_timeout(duration<long double, std::pico>(1e40L)).deadline(), never);
    try {
        green::sleep_for(duration<double>(std::nan("")));
        ADD_FAILURE() << "slept for NaN";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
    }
}
