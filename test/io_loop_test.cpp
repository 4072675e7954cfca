#include "support.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <system_error>
#include <thread>

using namespace std::chrono_literals;
namespace green = zmq::green;
using test::green_test;

namespace {

// Stops the loop and fails if the test did not finish in time; only a guard
// against hangs, never a timing assertion.
struct watchdog {
    watchdog(green::io_loop& loop, std::chrono::milliseconds after = 10s)
        : loop_(loop), handle_(loop.call_later(after, [this] {
              fired = true;
              loop_.stop();
          }))
    {
    }
    ~watchdog()
    {
        loop_.remove_timeout(handle_);
        EXPECT_FALSE(fired) << "watchdog fired: the loop did not finish in time";
    }
    green::io_loop& loop_;
    green::timeout_handle handle_;
    bool fired = false;
};

} // namespace

class io_loop : public green_test {
protected:
    void TearDown() override
    {
        EXPECT_EQ(loop.stats().rescues, rescues_expected);
        green_test::TearDown();
    }

    // n bound PULL sockets that never get a message, each with a handler.
    std::vector<green::socket_t> add_idle_handlers(int n)
    {
        std::vector<green::socket_t> sockets;
        for (int i = 0; i < n; ++i) {
            sockets.emplace_back(ctx, zmq::socket_type::pull);
            sockets.back().bind(test::unique_inproc());
            loop.add_handler(
                sockets.back(), [](short) { ADD_FAILURE() << "an idle socket was ready"; },
                ZMQ_POLLIN);
        }
        return sockets;
    }

    // n pipes nobody writes to, each read end with a handler; the fixture
    // removes the handlers and closes the pipes.
    void add_idle_fd_handlers(int n)
    {
        for (int i = 0; i < n; ++i) {
            int fds[2];
            ASSERT_EQ(::pipe(fds), 0);
            pipes_.push_back(fds[0]);
            pipes_.push_back(fds[1]);
            loop.add_handler(
                fds[0], [](short) { ADD_FAILURE() << "an idle fd was ready"; }, ZMQ_POLLIN);
        }
    }

    // Runs the loop in one fiber and then() in another once the loop has
    // parked: fibers start in order, and an idle loop parks before it yields.
    // A handler on s that receives one message into got and stops the loop.
    void stop_at_first_message(green::socket_t& s, std::string& got)
    {
        loop.add_handler(
            s,
            [&](short) {
                zmq::message_t m;
                ASSERT_TRUE(s.recv(m, zmq::recv_flags::dontwait));
                got = m.to_string();
                loop.stop();
            },
            ZMQ_POLLIN);
    }

    void run_loop_then(const std::function<void()>& then)
    {
        watchdog guard(loop);
        test::run_fibers({[&] { loop.start(); },
                          [&] {
                              EXPECT_GT(loop.stats().parks, 0u) << "the loop has not parked";
                              then();
                          }});
    }

    ~io_loop() override
    {
        for (std::size_t i = 0; i < pipes_.size(); i += 2)
            loop.remove_handler(pipes_[i]);
        for (int fd : pipes_)
            ::close(fd);
    }

    green::io_loop loop;
    std::uint64_t rescues_expected = 0; // only a test that loses an edge on purpose rescues
    std::vector<int> pipes_;
};

TEST_F(io_loop, callback_stops_the_loop)
{
    bool ran = false;
    loop.add_callback([&] {
        ran = true;
        loop.stop();
    });
    loop.start();
    EXPECT_TRUE(ran);
    EXPECT_FALSE(loop.running());
}

TEST_F(io_loop, callbacks_added_by_callbacks_run_on_the_next_iteration)
{
    std::uint64_t first = 0, second = 0;
    loop.add_callback([&] {
        first = loop.stats().iterations;
        loop.add_callback([&] {
            second = loop.stats().iterations;
            loop.stop();
        });
    });
    loop.start();
    EXPECT_EQ(second, first + 1);
}

TEST_F(io_loop, add_callback_from_four_threads_wakes_the_sleeping_loop)
{
    constexpr int per_thread = 2000;
    int count = 0;
    std::vector<std::thread> threads;
    watchdog guard(loop);
    loop.add_callback([&] {
        // Started from inside the loop so that some arrive while it sleeps.
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&] {
                for (int i = 0; i < per_thread; ++i)
                    loop.add_callback([&] {
                        if (++count == 4 * per_thread)
                            loop.stop();
                    });
            });
    });
    loop.start();
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(count, 4 * per_thread);
}

// A wake from another thread is one edge of the loop's eventfd; reading the
// eventfd brings a POLLOUT edge of its own, which must not wake the loop a
// second time for nothing.
TEST_F(io_loop, a_callback_from_another_thread_costs_one_park)
{
    constexpr int callbacks = 100;
    std::atomic<int> ran{0};
    std::atomic<bool> loop_ended{false};
    std::thread poster;
    watchdog guard(loop);
    loop.add_callback([&] {
        poster = std::thread([&] {
            for (int i = 0; i < callbacks && !loop_ended; ++i) {
                loop.add_callback([&] {
                    if (ran.fetch_add(1) + 1 == callbacks)
                        loop.stop();
                });
                while (ran.load() <= i && !loop_ended) // each after the last has run
                    std::this_thread::yield();
            }
        });
    });
    loop.start();
    loop_ended = true; // a watchdog stop must not leave the poster waiting
    poster.join();
    EXPECT_EQ(ran.load(), callbacks);
    EXPECT_LE(loop.stats().parks, callbacks + callbacks / 4u);
}

TEST_F(io_loop, stop_from_another_thread)
{
    std::thread stopper;
    loop.add_callback([&] { stopper = std::thread([&] { loop.stop(); }); });
    watchdog guard(loop);
    loop.start();
    stopper.join();
}

// A monitoring thread may read a running loop's stats and fallback interval
// (ThreadSanitizer reports a data race were they plain fields).
TEST_F(io_loop, another_thread_reads_the_stats_of_a_running_loop)
{
    constexpr std::uint64_t iterations = 100;
    std::atomic<bool> loop_ended{false};
    std::thread reader;
    green::periodic_callback ticker(loop, [] {}, 1ms); // an iteration, and a park, each time
    watchdog guard(loop);
    loop.add_callback([&] {
        reader = std::thread([&] {
            while (loop.stats().iterations < iterations && !loop_ended)
                std::this_thread::yield();
            EXPECT_EQ(loop.fallback_interval(), 1000ms);
            loop.stop();
        });
    });
    ticker.start();
    loop.start();
    loop_ended = true; // a watchdog stop must not leave the reader waiting
    reader.join();
    EXPECT_GE(loop.stats().iterations, iterations);
    EXPECT_GT(loop.stats().parks, 0u);
}

// As tornado: the due timeouts are taken before the callbacks run, so a
// zero-delay timeout added by a callback runs on the next iteration, after
// the callbacks that callback added.
TEST_F(io_loop, a_timeout_added_by_a_callback_waits_for_the_next_iteration)
{
    std::vector<std::string> order;
    std::uint64_t added_in = 0, ran_in = 0;
    const auto done = [&](const char* what) {
        order.emplace_back(what);
        if (order.size() == 2)
            loop.stop();
    };
    loop.add_callback([&] {
        added_in = loop.stats().iterations;
        loop.call_later(0ms, [&] {
            ran_in = loop.stats().iterations;
            done("timeout");
        });
        loop.add_callback([&] { done("callback"); });
    });
    watchdog guard(loop);
    loop.start();
    EXPECT_EQ(order, (std::vector<std::string>{"callback", "timeout"}));
    EXPECT_EQ(ran_in, added_in + 1);
}

// As tornado: a stop() made while the loop is not running ends the next
// start() after one iteration, rather than being lost.
TEST_F(io_loop, a_stop_before_start_ends_the_next_run)
{
    int ran = 0;
    loop.add_callback([&] { ++ran; });
    loop.stop();
    watchdog guard(loop); // a lost stop() would run until it fires
    loop.start();
    EXPECT_EQ(ran, 1);
    // Consumed: the next run goes on until its own stop().
    loop.add_callback([&] {
        ++ran;
        loop.add_callback([&] {
            ++ran;
            loop.stop();
        });
    });
    loop.start();
    EXPECT_EQ(ran, 3);
}

TEST_F(io_loop, equal_deadlines_run_in_insertion_order)
{
    std::vector<int> order;
    const auto when = green::io_loop::time() + 5ms;
    for (int i = 0; i < 5; ++i)
        loop.call_at(when, [&, i] { order.push_back(i); });
    loop.call_at(when, [&] { loop.stop(); });
    loop.start();
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST_F(io_loop, timeouts_run_by_deadline_and_can_be_removed)
{
    std::vector<int> order;
    loop.call_later(30ms, [&] {
        order.push_back(30);
        loop.stop();
    });
    auto cancelled = loop.call_later(10ms, [&] { order.push_back(-1); });
    loop.call_later(20ms, [&] { order.push_back(20); });
    auto fired = loop.call_later(1ms, [&] { order.push_back(1); });
    loop.remove_timeout(cancelled);
    loop.start();
    EXPECT_EQ(order, (std::vector<int>{1, 20, 30}));
    loop.remove_timeout(fired);     // after it ran: harmless
    loop.remove_timeout(cancelled); // twice: harmless
    loop.remove_timeout({});        // empty handle: harmless
}

TEST_F(io_loop, a_timeout_can_remove_another_due_in_the_same_batch)
{
    bool second_ran = false;
    green::timeout_handle second;
    const auto when = green::io_loop::time() + 2ms;
    loop.call_at(when, [&] { loop.remove_timeout(second); });
    second = loop.call_at(when, [&] { second_ran = true; });
    loop.call_later(10ms, [&] { loop.stop(); });
    loop.start();
    EXPECT_FALSE(second_ran);
}

// Sets *flag when the last function holding the result is destroyed: shows
// whether a running function was destroyed under its own call.
namespace {

std::shared_ptr<void> on_destruction(const std::shared_ptr<bool>& flag)
{
    return std::shared_ptr<void>(nullptr, [flag](void*) { *flag = true; });
}

} // namespace

TEST_F(io_loop, a_periodic_callback_may_destroy_itself_in_its_callback)
{
    auto fn_gone = std::make_shared<bool>(false);
    int calls = 0;
    std::unique_ptr<green::periodic_callback> ticker;
    ticker = std::make_unique<green::periodic_callback>(
        loop,
        [&, alive = on_destruction(fn_gone)] {
            ++calls;
            ticker.reset();
            EXPECT_FALSE(*fn_gone) << "the running function was destroyed";
            loop.stop();
        },
        1ms);
    ticker->start();
    watchdog guard(loop);
    loop.start();
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(*fn_gone); // once it returned
}

// The loop's error handler may replace itself; its captures live until it returns.
TEST_F(io_loop, an_error_handler_may_replace_itself)
{
    auto first_gone = std::make_shared<bool>(false);
    int second = 0;
    loop.set_error_handler([&, alive = on_destruction(first_gone)](std::exception_ptr) {
        loop.set_error_handler([&](std::exception_ptr) { ++second; });
        EXPECT_FALSE(*first_gone) << "the running error handler was destroyed";
    });
    loop.add_callback([] { throw std::runtime_error("first"); });
    loop.add_callback([] { throw std::runtime_error("second"); });
    loop.add_callback([&] { loop.stop(); });
    watchdog guard(loop);
    loop.start();
    EXPECT_TRUE(*first_gone);
    EXPECT_EQ(second, 1);
}

// tornado leaves two timers running after stop() and start() in the callback.
TEST_F(io_loop, a_periodic_callback_restarted_in_its_callback_runs_once_a_period)
{
    std::vector<std::uint64_t> iterations;
    green::periodic_callback* self = nullptr;
    green::periodic_callback pc(
        loop,
        [&] {
            iterations.push_back(loop.stats().iterations);
            if (iterations.size() == 1) {
                self->stop();
                self->start();
            }
            if (iterations.size() == 4) {
                self->stop();
                loop.stop();
            }
        },
        5ms);
    self = &pc;
    pc.start();
    watchdog guard(loop);
    loop.start();
    ASSERT_EQ(iterations.size(), 4u);
    // A timeout added by a timeout waits for the next iteration: calls of
    // one schedule never share one, two schedules' calls fall due together.
    for (std::size_t i = 1; i < iterations.size(); ++i)
        EXPECT_LT(iterations[i - 1], iterations[i]) << "call " << i + 1;
}

TEST_F(io_loop, periodic_callback_rejects_non_positive_periods)
{
    EXPECT_THROW(green::periodic_callback(loop, [] {}, 0ms), std::invalid_argument);
    EXPECT_THROW(green::periodic_callback(loop, [] {}, -5ms), std::invalid_argument);
}

// pyzmq test_simple: a periodic stop ends start() while another ticks fast.
TEST_F(io_loop, periodic_callbacks_run_and_stop_the_loop)
{
    int ticks = 0;
    green::periodic_callback stopper(loop, [&] { loop.stop(); }, 200ms);
    green::periodic_callback ticker(loop, [&] { ++ticks; }, 10ms);
    EXPECT_FALSE(stopper.is_running());
    stopper.start();
    ticker.start();
    EXPECT_TRUE(stopper.is_running());
    watchdog guard(loop);
    loop.start();
    EXPECT_GT(ticks, 0);
    ticker.stop();
    EXPECT_FALSE(ticker.is_running());
}

TEST_F(io_loop, periodic_callback_skips_missed_ticks)
{
    constexpr auto period = 50ms;
    std::vector<green::io_loop::clock::time_point> calls;
    green::io_loop::clock::time_point behind{};
    green::periodic_callback* self = nullptr;
    green::periodic_callback pc(
        loop,
        [&] {
            calls.push_back(green::io_loop::time());
            if (calls.size() == 1) {
                std::this_thread::sleep_for(260ms); // the loop falls five periods behind
                behind = green::io_loop::time();
            }
            if (calls.size() == 3) {
                self->stop();
                loop.stop();
            }
        },
        period);
    self = &pc;
    pc.start();
    watchdog guard(loop);
    loop.start();
    ASSERT_EQ(calls.size(), 3u);
    // Replayed ticks are all due when the first call returns, and come back
    // to back. Skipped ones resume at the first tick after it, and the one
    // after that is a period later still: a lower bound that load (which only
    // delays a call) cannot break.
    EXPECT_GT(calls[2] - behind, period);
    EXPECT_FALSE(pc.is_running());
}

TEST_F(io_loop, exceptions_go_to_the_error_handler_and_the_loop_goes_on)
{
    std::vector<std::string> errors;
    loop.set_error_handler(test::collect_errors(errors));
    loop.add_callback([] { throw std::runtime_error("from callback"); });
    loop.call_later(1ms, [] { throw std::runtime_error("from timeout"); });
    green::periodic_callback pc(loop, [] { throw std::runtime_error("from periodic"); }, 1ms);
    pc.start();
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    ASSERT_EQ(::write(fds[1], "x", 1), 1);
    loop.add_handler(
        fds[0],
        [&](short) {
            loop.remove_handler(fds[0]);
            throw std::runtime_error("from handler");
        },
        ZMQ_POLLIN);
    loop.call_later(20ms, [&] { loop.stop(); });
    loop.start();
    pc.stop();
    ::close(fds[0]);
    ::close(fds[1]);
    ASSERT_GE(errors.size(), 4u);
    auto has = [&](const std::string& s) {
        return std::find(errors.begin(), errors.end(), s) != errors.end();
    };
    EXPECT_TRUE(has("from callback"));
    EXPECT_TRUE(has("from timeout"));
    EXPECT_TRUE(has("from periodic"));
    EXPECT_TRUE(has("from handler"));
}

TEST_F(io_loop, the_default_error_handler_prints_one_line)
{
    loop.add_callback([] { throw std::runtime_error("boom"); });
    loop.add_callback([&] { loop.stop(); });
    testing::internal::CaptureStderr();
    loop.start();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("uncaught exception in callback: boom"), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1);
}

TEST_F(io_loop, socket_handlers_are_level_triggered)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull);
    // Handshake: the first message proves the connection.
    p.a.send(zmq::str_buffer("one"));
    p.a.send(zmq::str_buffer("two"));
    int calls = 0;
    std::vector<std::string> got;
    loop.add_handler(
        p.b,
        [&](short events) {
            EXPECT_EQ(events, ZMQ_POLLIN);
            // Consumes only every other call: the level keeps it coming.
            if (++calls % 2 == 0) {
                zmq::message_t m;
                ASSERT_TRUE(p.b.recv(m, zmq::recv_flags::dontwait));
                got.push_back(m.to_string());
                if (got.size() == 2)
                    loop.stop();
            }
        },
        ZMQ_POLLIN);
    watchdog guard(loop);
    loop.start();
    EXPECT_EQ(got, (std::vector<std::string>{"one", "two"}));
    EXPECT_EQ(calls, 4);
}

// An iteration reads the level of the sockets that may have changed, not of
// every registered one: a thousand idle streams must not slow a busy one.
TEST_F(io_loop, idle_socket_handlers_are_not_read_on_every_iteration)
{
    constexpr int idle = 100, messages = 50;
    const auto idles = add_idle_handlers(idle);
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull, test::unique_inproc());
    for (int i = 0; i < messages; ++i)
        p.a.send(zmq::str_buffer("m"));
    int got = 0;
    // One message per call: the level brings the handler back once per iteration.
    loop.add_handler(
        p.b,
        [&](short) {
            zmq::message_t m;
            ASSERT_TRUE(p.b.recv(m, zmq::recv_flags::dontwait));
            if (++got == messages)
                loop.stop();
        },
        ZMQ_POLLIN);
    watchdog guard(loop);
    const auto before = loop.stats();
    loop.start();
    const auto after = loop.stats();
    EXPECT_EQ(got, messages);
    const auto iterations = after.iterations - before.iterations;
    EXPECT_GE(iterations, static_cast<std::uint64_t>(messages));
    // Each idle socket once (its first check), the busy one about once per iteration.
    EXPECT_LE(after.level_checks - before.level_checks, idle + 2 * iterations);
}

// Fd handlers stay in the hub's epoll set, and an iteration polls only those
// whose fd signalled (or were ready last time).
TEST_F(io_loop, idle_fd_handlers_are_not_polled_on_every_iteration)
{
    constexpr int idle = 100, messages = 50;
    add_idle_fd_handlers(idle);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pipes_.push_back(fds[0]);
    pipes_.push_back(fds[1]);
    int got = 0;
    // One byte per call: the level brings the handler back once per iteration.
    loop.add_handler(
        fds[0],
        [&](short) {
            char c;
            ASSERT_EQ(::read(fds[0], &c, 1), 1);
            if (++got == messages)
                loop.stop();
        },
        ZMQ_POLLIN);
    run_loop_then([&] {
        const std::string bytes(messages, 'x'); // one edge for them all
        ASSERT_EQ(::write(fds[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    });
    EXPECT_EQ(got, messages);
    const auto s = loop.stats();
    EXPECT_GE(s.iterations, static_cast<std::uint64_t>(messages));
    // Each idle fd once (its first check), the busy one about once per iteration.
    EXPECT_LE(s.level_checks, idle + 2 * s.iterations);
}

// Closing an fd before removing its handler is a mistake (io_loop.hpp), but
// a survivable one: epoll forgets a closed fd without a word, and the
// fallback re-check, which polls every fd handler, finds it gone and tells
// its handler once. While a dup keeps the file open, the kernel keeps its
// epoll entry too, and an event of that entry must not reach freed memory
// (ASan). A number reused before the re-check defeats it: see io_loop.hpp.
TEST_F(io_loop, an_fd_closed_under_its_handler_gets_pollerr_once_and_is_removed)
{
    for (const bool keep_file_open : {false, true}) {
        SCOPED_TRACE(keep_file_open ? "a dup keeps the file open" : "the file is closed");
        int fds[2];
        ASSERT_EQ(::pipe(fds), 0);
        const int dup = keep_file_open ? ::dup(fds[0]) : -1;
        std::vector<short> seen;
        loop.add_handler(
            fds[0],
            [&](short e) {
                seen.push_back(e);
                // An event for the entry the dup keeps alive, after the removal
                // (without a reader left, the write would raise SIGPIPE).
                if (keep_file_open) {
                    ASSERT_EQ(::write(fds[1], "x", 1), 1);
                }
                loop.call_later(5ms, [&] { loop.stop(); });
            },
            ZMQ_POLLIN);
        loop.set_fallback_interval(1ms);
        run_loop_then([&] { ::close(fds[0]); }); // checked already: no edge will come
        ::close(fds[1]);
        if (dup >= 0)
            ::close(dup);
        EXPECT_EQ(seen, (std::vector<short>{ZMQ_POLLERR}));
        EXPECT_THROW(loop.update_handler(fds[0], ZMQ_POLLIN), std::invalid_argument); // removed
    }
}

// The fallback re-check asks which sockets hold a signal no edge announced;
// it does not read every idle socket's level each time it runs.
TEST_F(io_loop, the_fallback_recheck_does_not_read_idle_sockets)
{
    constexpr int idle = 50, fallbacks = 6; // 1, 4, 16, 64 and 64 ms apart
    const auto idles = add_idle_handlers(idle);
    loop.set_fallback_interval(1ms);
    watchdog guard(loop);
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          // Nothing else wakes the loop: each iteration after the
                          // first is the fallback's.
                          while (loop.stats().iterations < fallbacks)
                              boost::this_fiber::sleep_for(1ms);
                          loop.stop();
                      }});
    EXPECT_GE(loop.stats().iterations, static_cast<std::uint64_t>(fallbacks));
    EXPECT_EQ(loop.stats().level_checks, static_cast<std::uint64_t>(idle)); // the first check each
}

// As the hub's (hub.an_idle_hub_rechecks_ever_less_often_and_still_rescues_a_lost_edge):
// a loop whose handlers see nothing re-checks four times later each time.
TEST_F(io_loop, an_idle_loop_rechecks_ever_less_often)
{
    const auto idles = add_idle_handlers(1);
    loop.set_fallback_interval(2ms);
    watchdog guard(loop);
    std::vector<double> spans;
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          auto iterations = [&] { return loop.stats().iterations; };
                          while (iterations() == 0)
                              boost::this_fiber::yield();
                          // Nothing else wakes the loop: each iteration after the
                          // first is the fallback's, 2, 8, 32 and 128 ms apart
                          // (if this fiber came late, later ones: 128 at most).
                          spans = test::spans_between_increments_ms(iterations, 4);
                          loop.stop();
                      }});
    EXPECT_GE(spans[2], 8.0);
    EXPECT_GE(spans[3], 32.0);
    EXPECT_GE(spans[4], 128.0);
}

// The edge epoll never delivers, lost here on purpose: the loop's fallback
// re-check still brings the message to the handler, and counts the rescue.
TEST_F(io_loop, a_lost_edge_is_rescued_by_the_fallback_and_counted)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull, test::unique_inproc());
    loop.set_fallback_interval(10ms);
    std::string got;
    stop_at_first_message(p.b, got);
    run_loop_then([&] {
        p.a.send(zmq::str_buffer("lost"));
        EXPECT_EQ(test::lose_edges(p.b.get(zmq::sockopt::fd)), 1);
    });
    EXPECT_EQ(got, "lost");
    rescues_expected = 1;
}

// The fallback re-check polls the fd handlers; an fd that became ready
// after the hub last read epoll has its edge waiting there, not lost, and
// must not count as a rescue. Here a fiber woken by the same turn of the hub
// as the loop's re-check writes first (another thread can at any time).
TEST_F(io_loop, an_fd_edge_epoll_has_not_delivered_yet_is_not_a_rescue)
{
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    loop.set_fallback_interval(20ms);
    int calls = 0;
    loop.add_handler(
        efd,
        [&](short) {
            std::uint64_t v = 0;
            EXPECT_EQ(::read(efd, &v, sizeof v), static_cast<ssize_t>(sizeof v));
            ++calls;
            loop.stop();
        },
        ZMQ_POLLIN);
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          green::sleep_for(10ms);
                          const std::uint64_t one = 1;
                          EXPECT_EQ(::write(efd, &one, sizeof one),
                                    static_cast<ssize_t>(sizeof one));
                      },
                      // Keeps the thread past both deadlines, so that one
                      // turn of the hub wakes both fibers.
                      [&] { std::this_thread::sleep_for(60ms); }});
    loop.remove_handler(efd);
    ::close(efd);
    EXPECT_EQ(calls, 1);
}

// Another loop's fallback re-check (every loop's sweeps the hub's sockets)
// finds a socket's signal unread while this loop's handler is already due for
// the edge that brought it: the handler was to be checked anyway, so its call
// is no rescue. Several zmq_streams on one hub, each on a loop of its own.
TEST_F(io_loop, a_due_handler_another_loops_recheck_finds_is_not_a_rescue)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull, test::unique_inproc());
    std::string got;
    stop_at_first_message(p.b, got); // due from the start
    zmq::message_t none;
    ASSERT_FALSE(p.b.recv(none, zmq::recv_flags::dontwait)); // the pipe sleeps: a signal will wake it
    p.a.send(zmq::str_buffer("edge"));
    green::io_loop other;
    test::bound_pair idle(ctx, zmq::socket_type::pair, zmq::socket_type::pair,
                          test::unique_inproc());
    other.add_handler(idle.a, [](short) {}, ZMQ_POLLIN);
    // Its first park lets the hub deliver the edge; the next ones end by its
    // fallback re-check, about fifty of them.
    other.set_fallback_interval(1ms);
    other.call_later(50ms, [&] { other.stop(); });
    other.start();
    other.remove_handler(idle.a);
    EXPECT_GT(other.stats().parks, 1u);
    {
        watchdog guard(loop);
        loop.start();
    }
    EXPECT_EQ(got, "edge"); // and TearDown: no rescue
}

// An edge that reaches a socket handler after the hub woke the loop for its
// fallback re-check, but before the re-check (a callback of that iteration
// parks and the hub polls), marks the handler due: its level is read anyway,
// and the signal the re-check then finds on the fd is that edge's, not a lost
// one. Here a fiber woken in the loop's turn of the hub sends and adds the
// parking callback (other threads and fibers can at any time).
TEST_F(io_loop, a_socket_edge_delivered_before_the_fallback_recheck_is_not_a_rescue)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull, test::unique_inproc());
    loop.set_fallback_interval(20ms);
    std::string got;
    stop_at_first_message(p.b, got);
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          green::sleep_for(10ms);
                          p.a.send(zmq::str_buffer("late"));
                          loop.add_callback([] { boost::this_fiber::yield(); });
                      },
                      // Keeps the thread past both deadlines, so that one
                      // turn of the hub wakes both fibers.
                      [&] { std::this_thread::sleep_for(60ms); }});
    EXPECT_EQ(got, "late"); // and no rescue (TearDown)
}

// A fiber's own call on the socket may take the signal the loop waits for
// (here a ZMQ_EVENTS read processes the command that brought the message):
// the handler must still run, without the fallback re-check.
TEST_F(io_loop, a_signal_another_fiber_consumed_still_reaches_the_handler)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull, test::unique_inproc());
    std::string got;
    stop_at_first_message(p.b, got);
    run_loop_then([&] {
        p.a.send(zmq::str_buffer("taken"));
        EXPECT_EQ(p.b.get(zmq::sockopt::events) & ZMQ_POLLIN, ZMQ_POLLIN);
    });
    EXPECT_EQ(got, "taken");
}

// pyzmq test_poller_events, through handlers.
TEST_F(io_loop, handler_events_follow_req_rep_state)
{
    test::bound_pair p(ctx, zmq::socket_type::rep, zmq::socket_type::req);
    short rep_events = 0, req_events = 0;
    loop.add_handler(p.a, [&](short e) { rep_events |= e; }, ZMQ_POLLIN);
    loop.add_handler(p.b, [&](short e) { req_events |= e; }, ZMQ_POLLIN);
    // A stop() made once the loop has dispatched (then parked or yielded).
    const auto dispatch_once = [&] { test::run_fibers({[&] { loop.start(); }, [&] { loop.stop(); }}); };
    dispatch_once();
    EXPECT_EQ(rep_events, 0);
    EXPECT_EQ(req_events, 0);

    loop.update_handler(p.a, ZMQ_POLLOUT);
    loop.update_handler(p.b, ZMQ_POLLOUT);
    dispatch_once();
    EXPECT_EQ(rep_events, 0);
    EXPECT_EQ(req_events, ZMQ_POLLOUT);

    rep_events = req_events = 0;
    loop.update_handler(p.b, ZMQ_POLLIN);
    p.b.send(zmq::str_buffer("request"));
    // The request travels over tcp: the REP handler stops the loop when it sees it.
    loop.remove_handler(p.a);
    loop.add_handler(
        p.a,
        [&](short e) {
            rep_events |= e;
            loop.stop();
        },
        ZMQ_POLLIN);
    watchdog guard(loop);
    loop.start();
    EXPECT_EQ(rep_events, ZMQ_POLLIN);
    EXPECT_EQ(req_events, 0);
}

// pyzmq #1075/#1140: a change of interest re-checks ZMQ_EVENTS. A message
// whose edge a poll consumed is found as soon as a handler asks for POLLIN,
// with no new edge and no rescue (the fixture counts them).
TEST_F(io_loop, an_interest_change_finds_a_message_whose_edge_was_consumed)
{
    test::bound_pair p(ctx, zmq::socket_type::pull, zmq::socket_type::push);
    p.b.send(zmq::str_buffer("waiting"));
    ASSERT_EQ(p.a.poll(ZMQ_POLLIN, 5000ms), ZMQ_POLLIN);
    short seen = 0;
    loop.add_handler(
        p.a,
        [&](short events) {
            seen |= events;
            loop.stop();
        },
        ZMQ_POLLOUT); // a PULL never can
    loop.add_callback([&] { loop.update_handler(p.a, ZMQ_POLLIN); });
    watchdog guard(loop);
    loop.start();
    EXPECT_EQ(seen, ZMQ_POLLIN);
}

TEST_F(io_loop, fd_handlers_wake_on_a_write_from_another_fiber)
{
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    short seen = 0;
    loop.add_handler(
        efd,
        [&](short e) {
            seen = e;
            std::uint64_t v;
            ASSERT_EQ(::read(efd, &v, sizeof v), static_cast<ssize_t>(sizeof v));
            loop.stop();
        },
        ZMQ_POLLIN);
    run_loop_then([&] {
        const std::uint64_t one = 1;
        ASSERT_EQ(::write(efd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
    });
    ::close(efd);
    EXPECT_EQ(seen, ZMQ_POLLIN);
}

// The loop's handler keeps the fd registered; a fiber's wait on the same fd
// shares the registration, and both hear the write.
// Urgent tcp data is ZMQ_POLLPRI for an fd handler that asks for it.
TEST_F(io_loop, an_fd_handler_hears_urgent_data_as_pollpri)
{
    test::tcp_pair tcp;
    short got = 0;
    loop.add_handler(
        tcp.receiver,
        [&](short events) {
            got = events;
            loop.stop();
        },
        ZMQ_POLLPRI);
    run_loop_then([&] { tcp.send_urgent(); });
    loop.remove_handler(tcp.receiver);
    EXPECT_EQ(got, ZMQ_POLLPRI);
}

TEST_F(io_loop, a_handler_and_a_fiber_wait_on_the_same_fd)
{
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    bool fiber_saw = false;
    int handler_calls = 0;
    // Nobody reads: the handler stays ready until the fiber has woken.
    loop.add_handler(
        efd,
        [&](short) {
            ++handler_calls;
            if (fiber_saw)
                loop.stop();
        },
        ZMQ_POLLIN);
    watchdog guard(loop);
    test::run_fibers({[&] { loop.start(); },
                      [&] { fiber_saw = green::wait_readable(efd, 5s); },
                      [&] {
                          const std::uint64_t one = 1;
                          ASSERT_EQ(::write(efd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
                      }});
    loop.remove_handler(efd);
    ::close(efd);
    EXPECT_TRUE(fiber_saw);
    EXPECT_GE(handler_calls, 1);
}

TEST_F(io_loop, blocking_fibers_run_while_the_loop_waits)
{
    test::bound_pair p(ctx, zmq::socket_type::rep, zmq::socket_type::req);
    int ticks = 0;
    green::periodic_callback pc(loop, [&] { ++ticks; }, 1ms);
    pc.start();
    watchdog guard(loop);
    test::run_fibers({[&] { loop.start(); },
                      [&] {
                          zmq::message_t m;
                          for (int i = 0; i < 20; ++i) {
                              ASSERT_TRUE(p.a.recv(m));
                              p.a.send(m, zmq::send_flags::none);
                          }
                      },
                      [&] {
                          for (int i = 0; i < 20; ++i) {
                              p.b.send(zmq::str_buffer("ping"));
                              zmq::message_t m;
                              ASSERT_TRUE(p.b.recv(m));
                          }
                          loop.stop();
                      }});
    pc.stop();
}

TEST_F(io_loop, a_closed_socket_gets_pollerr_once_and_is_removed)
{
    auto s = std::make_unique<green::socket_t>(ctx, zmq::socket_type::pull);
    int calls = 0;
    short seen = 0;
    loop.add_handler(*s, [&](short e) {
        ++calls;
        seen = e;
    }, ZMQ_POLLIN);
    loop.add_callback([&] { s->close(); });
    loop.call_later(20ms, [&] { loop.stop(); });
    loop.start();
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(seen, ZMQ_POLLERR);
}

TEST_F(io_loop, a_terminated_context_gives_its_sockets_handler_pollerr_once)
{
    green::socket_t s(ctx, zmq::socket_type::pull);
    int calls = 0;
    short seen = 0;
    loop.add_handler(s, [&](short e) {
        ++calls;
        seen = e;
    }, ZMQ_POLLIN);
    loop.add_callback([&] { ctx.shutdown(); });
    loop.call_later(20ms, [&] { loop.stop(); });
    loop.start();
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(seen, ZMQ_POLLERR);
}

// As tornado: a handler's stop() still lets the callbacks and timeouts it
// added run, in the next iteration, before the loop ends.
TEST_F(io_loop, a_stop_from_a_handler_runs_what_it_added_first)
{
    test::bound_pair p(ctx, zmq::socket_type::push, zmq::socket_type::pull);
    ASSERT_TRUE(p.a.send(zmq::str_buffer("go")));
    int handled = 0;
    bool callback_ran = false, timeout_ran = false;
    loop.add_handler(p.b, [&](short) {
        ++handled;
        zmq::message_t m;
        ASSERT_TRUE(p.b.recv(m, zmq::recv_flags::dontwait));
        loop.add_callback([&] { callback_ran = true; });
        loop.call_later(0ms, [&] { timeout_ran = true; });
        loop.stop();
    }, ZMQ_POLLIN);
    watchdog guard(loop);
    loop.start();
    EXPECT_EQ(handled, 1);
    EXPECT_TRUE(callback_ran);
    EXPECT_TRUE(timeout_ran);
}

// pyzmq test_close_all.
TEST_F(io_loop, close_all_fds_closes_the_sockets)
{
    test::bound_pair p(ctx, zmq::socket_type::rep, zmq::socket_type::req);
    loop.add_handler(p.a, [](short) {}, ZMQ_POLLIN);
    loop.add_handler(p.b, [](short) {}, ZMQ_POLLIN);
    loop.close(true);
    EXPECT_EQ(p.a.handle(), nullptr);
    EXPECT_EQ(p.b.handle(), nullptr);
    EXPECT_TRUE(loop.closed());
    EXPECT_THROW(loop.start(), std::logic_error);
}

TEST_F(io_loop, current_is_per_thread_and_follows_the_running_loop)
{
    green::io_loop& a = green::io_loop::current();
    EXPECT_EQ(&a, &green::io_loop::current());
    EXPECT_NE(&a, &loop);
    green::io_loop* inside = nullptr;
    loop.add_callback([&] {
        inside = &green::io_loop::current();
        loop.stop();
    });
    loop.start();
    EXPECT_EQ(inside, &loop);
    green::io_loop* other = nullptr;
    std::thread([&] { other = &green::io_loop::current(); }).join();
    EXPECT_NE(other, &a);
}

// Two loops in two fibers of one thread, stopped in the order they started
// rather than in reverse: each callback sees its own loop as current, and
// current() never names a loop that has gone.
TEST_F(io_loop, current_follows_the_fiber_when_two_loops_share_a_thread)
{
    green::io_loop& fallback = green::io_loop::current();
    auto first = std::make_unique<green::io_loop>();
    green::io_loop* seen_by_first = nullptr;
    green::io_loop* seen_by_second = nullptr;
    first->add_callback([&] { seen_by_first = &green::io_loop::current(); });
    boost::fibers::fiber a([&] { first->start(); });
    boost::fibers::fiber b([&] { loop.start(); });
    while (first->stats().parks == 0 || loop.stats().parks == 0)
        boost::this_fiber::yield();
    EXPECT_EQ(seen_by_first, first.get());
    EXPECT_EQ(&green::io_loop::current(), &loop) << "the last started of the running loops";
    first->stop();
    a.join();
    first.reset();
    EXPECT_EQ(&green::io_loop::current(), &loop);
    loop.add_callback([&] {
        seen_by_second = &green::io_loop::current();
        loop.stop();
    });
    b.join();
    EXPECT_EQ(seen_by_second, &loop);
    EXPECT_EQ(&green::io_loop::current(), &fallback);
}

TEST_F(io_loop, run_sync_returns_rethrows_and_times_out)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    std::string got;
    loop.run_sync([&] {
        p.a.send(zmq::str_buffer("sync"));
        zmq::message_t m;
        ASSERT_TRUE(p.b.recv(m)); // parks this fiber; the loop keeps running
        got = m.to_string();
    });
    EXPECT_EQ(got, "sync");
    EXPECT_THROW(loop.run_sync([] { throw std::domain_error("inner"); }), std::domain_error);
    bool finished = false;
    boost::fibers::promise<void> release;
    auto released = release.get_future();
    boost::fibers::promise<void> ended;
    auto has_ended = ended.get_future();
    EXPECT_THROW(loop.run_sync(
                     [&] {
                         released.wait(); // still busy when the timeout passes
                         finished = true;
                         ended.set_value();
                     },
                     10ms),
                 green::timeout_error);
    EXPECT_FALSE(finished);
    // The abandoned fiber goes on; let it end before the loop goes away.
    release.set_value();
    has_ended.wait();
    EXPECT_TRUE(finished);
}

// As tornado's run_sync: a stop() before fn returns ends run_sync with an
// error (not a timeout), and fn's fiber is left to finish on its own.
TEST_F(io_loop, run_sync_raises_when_the_loop_stops_before_the_function_returns)
{
    boost::fibers::promise<void> release;
    auto released = release.get_future();
    boost::fibers::promise<void> ended;
    auto has_ended = ended.get_future();
    std::string error;
    try {
        loop.run_sync([&] {
            loop.add_callback([&] { loop.stop(); });
            released.wait();
            ended.set_value();
        });
        error = "returned";
    } catch (const green::timeout_error& e) {
        error = std::string("timeout_error: ") + e.what();
    } catch (const std::runtime_error& e) {
        error = e.what();
    }
    EXPECT_NE(error.find("stopped before the function returned"), std::string::npos) << error;
    release.set_value();
    has_ended.wait();
}

TEST_F(io_loop, bad_input_is_rejected_clearly)
{
    green::socket_t none;
    try {
        loop.add_handler(none, [](short) {}, ZMQ_POLLIN);
        FAIL();
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), ENOTSOCK);
    }
    try {
        loop.add_handler(-1, [](short) {}, ZMQ_POLLIN);
        FAIL();
    } catch (const zmq::error_t& e) {
        EXPECT_EQ(e.num(), EBADF);
    }
    green::socket_t s(ctx, zmq::socket_type::pull);
    loop.add_handler(s, [](short) {}, ZMQ_POLLIN);
    EXPECT_THROW(loop.add_handler(s, [](short) {}, ZMQ_POLLIN), std::invalid_argument);
    EXPECT_THROW(loop.update_handler(s, 0x100), std::invalid_argument);
    EXPECT_THROW(loop.update_handler(42, ZMQ_POLLIN), std::invalid_argument);
    // What epoll cannot watch is refused when the handler is added, and
    // leaves no handler behind.
    FILE* file = std::tmpfile();
    ASSERT_NE(file, nullptr);
    const int regular = ::fileno(file);
    for (int attempt = 0; attempt < 2; ++attempt) {
        try {
            loop.add_handler(regular, [](short) {}, ZMQ_POLLIN);
            ADD_FAILURE() << "a regular file was accepted";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EPERM);
            EXPECT_NE(std::string(e.what()).find(std::to_string(regular)), std::string::npos)
                << e.what();
        }
    }
    std::fclose(file);
    int closed[2];
    ASSERT_EQ(::pipe(closed), 0);
    ::close(closed[0]);
    ::close(closed[1]);
    try {
        loop.add_handler(closed[0], [](short) {}, ZMQ_POLLIN);
        ADD_FAILURE() << "a closed fd was accepted";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EBADF);
    }
    // A green socket's ZMQ_FD is the hub's already.
    EXPECT_THROW(loop.add_handler(s.get(zmq::sockopt::fd), [](short) {}, ZMQ_POLLIN),
                 std::system_error);
    EXPECT_THROW(loop.add_callback(nullptr), std::invalid_argument);
    EXPECT_THROW(loop.call_later(1ms, nullptr), std::invalid_argument);
    EXPECT_THROW(loop.set_fallback_interval(-1ms), std::invalid_argument);
    loop.remove_handler(s);
    loop.remove_handler(s);  // unknown: ignored
    loop.remove_handler(99); // unknown: ignored
    bool threw = false;
    std::thread([&] {
        try {
            loop.call_later(1ms, [] {});
        } catch (const green::thread_error&) {
            threw = true;
        }
    }).join();
    EXPECT_TRUE(threw);
}

TEST_F(io_loop, start_while_running_is_an_error)
{
    bool threw = false;
    loop.add_callback([&] {
        try {
            loop.start();
        } catch (const std::logic_error&) {
            threw = true;
        }
        loop.stop();
    });
    loop.start();
    EXPECT_TRUE(threw);
}

// --- bad input -----------------------------------------------------------------

TEST_F(io_loop, BadInput_run_sync_timeouts)
{
    for (auto timeout : {-2ms, -5ms, std::chrono::milliseconds::min()}) {
        bool ran = false;
        try {
            loop.run_sync([&] { ran = true; }, timeout);
            ADD_FAILURE() << "accepted " << timeout.count();
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find("timeout"), std::string::npos) << e.what();
        }
        EXPECT_FALSE(ran);
    }
    EXPECT_THROW(loop.run_sync(nullptr), std::invalid_argument);
    // -1 and a timeout too long for the clock both mean: wait for fn.
    for (auto timeout : {-1ms, std::chrono::milliseconds::max()}) {
        bool ran = false;
        loop.run_sync(
            [&] {
                boost::this_fiber::yield();
                ran = true;
            },
            timeout);
        EXPECT_TRUE(ran);
    }
}

// Its start() would read the loop after the callback returns: the mistake is
// named, not a use of freed memory.
TEST_F(io_loop, BadInput_destroying_a_running_loop_terminates_naming_it)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    auto doomed = std::make_unique<green::io_loop>();
    doomed->add_callback([&] { doomed.reset(); });
    EXPECT_DEATH(doomed->start(), "io_loop::~io_loop: the loop is running");
    // Stopped (here, never started), it goes quietly with its callback queued.
    doomed.reset();
    auto stopped = std::make_unique<green::io_loop>();
    stopped->add_callback([&] { stopped->stop(); });
    stopped->start();
    stopped.reset();
}

// run_sync starts the loop: where start() would refuse, it throws before fn
// is queued, so fn never runs behind the caller's back.
TEST_F(io_loop, BadInput_run_sync_on_a_running_or_closed_loop_never_runs_fn)
{
    watchdog guard(loop);
    int runs = 0;
    loop.add_callback([&] {
        try {
            loop.run_sync([&] { ++runs; });
            ADD_FAILURE() << "run_sync on the running loop returned";
        } catch (const std::logic_error& e) {
            EXPECT_NE(std::string(e.what()).find("already running"), std::string::npos)
                << e.what();
        }
        // Three more rounds, in which a queued fn would have run.
        loop.add_callback([&] {
            loop.add_callback([&] { loop.add_callback([&] { loop.stop(); }); });
        });
    });
    loop.start();
    // A queued fn would run in a fiber of its own, ready by now.
    boost::this_fiber::yield();
    EXPECT_EQ(runs, 0);

    green::io_loop closed;
    closed.close();
    EXPECT_THROW(closed.run_sync([&] { ++runs; }), std::logic_error);
    EXPECT_EQ(runs, 0);
}

// A delay that is negative or zero means "as soon as possible", as in
// tornado and asyncio; the extremes of the clock neither overflow nor fire
// early.
TEST_F(io_loop, BadInput_call_later_delays_at_the_edges)
{
    watchdog guard(loop);
    std::vector<std::string> ran;
    loop.call_later(green::io_loop::clock::duration::max(), [&] { ran.push_back("max"); });
    loop.call_at(green::io_loop::clock::time_point::max(), [&] { ran.push_back("at max"); });
    loop.call_later(-5ms, [&] { ran.push_back("-5ms"); });
    loop.call_later(green::io_loop::clock::duration::min(), [&] { ran.push_back("min"); });
    loop.call_at(green::io_loop::clock::time_point::min(), [&] { ran.push_back("at min"); });
    loop.call_later(0ms, [&] { ran.push_back("0ms"); });
    loop.call_later(1ms, [&] { loop.stop(); });
    loop.start();
    // Earliest deadline first; nothing at the far end ran.
    EXPECT_EQ(ran, (std::vector<std::string>{"min", "at min", "-5ms", "0ms"}));
}

TEST_F(io_loop, BadInput_periodic_callback_periods)
{
    for (auto period : {0ms, -5ms, std::chrono::milliseconds::min(),
                        std::chrono::milliseconds::max()}) {
        try {
            green::periodic_callback(loop, [] {}, period);
            ADD_FAILURE() << "accepted " << period.count();
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find("period"), std::string::npos) << e.what();
        }
    }
    EXPECT_THROW(green::periodic_callback(loop, nullptr, 1ms), std::invalid_argument);
    watchdog guard(loop);
    int ticks = 0;
    green::periodic_callback ticker(loop, [&] {
        if (++ticks == 3)
            loop.stop();
    }, 1ms);
    ticker.start();
    loop.start();
    EXPECT_EQ(ticks, 3);
}

// Negative is refused; a huge interval means "rarely" and must not overflow
// into a deadline in the past (a busy loop that counts rescues).
// Timeout keys are counted per loop, so another loop's handle can name the
// same deadline and number as one of this loop's: refused, and both stay.
TEST_F(io_loop, BadInput_a_timeout_of_another_loop_is_refused)
{
    green::io_loop other;
    const auto when = green::io_loop::time();
    bool mine = false, theirs = false;
    loop.call_at(when, [&] {
        mine = true;
        loop.stop();
    });
    const auto foreign = other.call_at(when, [&] {
        theirs = true;
        other.stop();
    });
    test::expect_error<std::invalid_argument>([&] { loop.remove_timeout(foreign); },
                                              {"remove_timeout", "another loop"});
    watchdog guard(loop), other_guard(other);
    loop.start();
    other.start();
    EXPECT_TRUE(mine);
    EXPECT_TRUE(theirs);
}

TEST_F(io_loop, BadInput_fallback_interval)
{
    EXPECT_THROW(loop.set_fallback_interval(-1ms), std::invalid_argument);
    EXPECT_THROW(loop.set_fallback_interval(std::chrono::milliseconds::min()),
                 std::invalid_argument);
    EXPECT_EQ(loop.fallback_interval(), 1000ms);
    loop.set_fallback_interval(std::chrono::milliseconds::max());
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    watchdog guard(loop);
    std::string got;
    loop.add_handler(p.b, [&](short) {
        zmq::message_t m;
        if (p.b.recv(m, zmq::recv_flags::dontwait)) {
            got = m.to_string();
            loop.stop();
        }
    }, ZMQ_POLLIN);
    // Sent once the loop is parked on the socket.
    boost::fibers::fiber sender([&] { p.a.send(zmq::str_buffer("x")); });
    loop.start();
    sender.join();
    EXPECT_EQ(got, "x");
    loop.remove_handler(p.b);
}

TEST_F(io_loop, BadInput_foreign_thread_calls_are_thread_errors)
{
    test::bound_pair p(ctx, zmq::socket_type::pair, zmq::socket_type::pair);
    loop.add_handler(p.a, [](short) {}, ZMQ_POLLIN);
    const green::timeout_handle timer = loop.call_later(1h, [] {});
    green::periodic_callback ticker(loop, [] {}, 1ms);
    int threw = 0;
    std::thread([&] {
        auto expect_thread_error = [&](const std::function<void()>& fn) {
            try {
                fn();
            } catch (const green::thread_error& e) {
                threw += std::string(e.what()).find("thread") != std::string::npos ? 1 : 0;
            }
        };
        expect_thread_error([&] { loop.start(); });
        expect_thread_error([&] { loop.run_sync([] {}); });
        expect_thread_error([&] { loop.add_handler(0, [](short) {}, ZMQ_POLLIN); });
        expect_thread_error([&] { loop.call_later(1ms, [] {}); });
        expect_thread_error([&] { loop.set_error_handler(nullptr); });
        expect_thread_error([&] { loop.close(); });
        expect_thread_error([&] { loop.remove_handler(p.a); });
        expect_thread_error([&] { loop.remove_timeout(timer); });
        expect_thread_error([&] { loop.set_fallback_interval(10ms); });
        expect_thread_error([&] { ticker.start(); });
        // Refused when made, not when its destructor stops it (terminate).
        expect_thread_error([&] { green::periodic_callback other(loop, [] {}, 1ms); });
        // The thread's own default loop cannot take the other thread's socket.
        expect_thread_error(
            [&] { green::io_loop::current().add_handler(p.b, [](short) {}, ZMQ_POLLIN); });
    }).join();
    EXPECT_EQ(threw, 12);
    EXPECT_FALSE(loop.closed());
    // Nothing the refused calls named changed.
    EXPECT_THROW(loop.add_handler(p.a, [](short) {}, ZMQ_POLLIN), std::invalid_argument);
    loop.remove_handler(p.a);
    EXPECT_EQ(loop.fallback_interval(), 1000ms);
    EXPECT_FALSE(ticker.is_running());
    loop.remove_timeout(timer);
    loop.run_sync([&] {
        p.a.send(zmq::str_buffer("x"));
        zmq::message_t m;
        ASSERT_TRUE(p.b.recv(m));
    });
}

// A closed loop never runs again: work given to it is refused, naming the
// call, rather than kept (a socket retained, an fd in the hub's epoll set)
// for nothing until the loop goes. A callback is dropped, as in tornado.
TEST_F(io_loop, BadInput_work_given_to_a_closed_loop_is_refused)
{
    green::io_loop closed;
    closed.close();
    green::socket_t s(ctx, zmq::socket_type::pull);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    green::periodic_callback ticker(closed, [] {}, 1ms);
    const char* const why = "the loop is closed";
    test::expect_error<std::logic_error>(
        [&] { closed.add_handler(s, [](short) {}, ZMQ_POLLIN); }, {"add_handler", why});
    test::expect_error<std::logic_error>(
        [&] { closed.add_handler(fds[0], [](short) {}, ZMQ_POLLIN); }, {"add_handler", why});
    test::expect_error<std::logic_error>([&] { closed.call_later(1ms, [] {}); },
                                         {"call_later", why});
    test::expect_error<std::logic_error>(
        [&] { closed.call_at(green::io_loop::time(), [] {}); }, {"call_at", why});
    test::expect_error<std::logic_error>([&] { ticker.start(); },
                                         {"periodic_callback::start", why});
    EXPECT_FALSE(ticker.is_running());
    closed.add_callback([] { ADD_FAILURE() << "a closed loop ran a callback"; });
    ::close(fds[0]);
    ::close(fds[1]);
}

// handle_exception runs the error handler, which belongs to the loop's
// thread like the rest of its state.
TEST_F(io_loop, BadInput_handle_exception_from_another_thread_is_a_thread_error)
{
    int handled = 0;
    loop.set_error_handler([&](std::exception_ptr) { ++handled; });
    bool threw = false;
    std::thread([&] {
        try {
            loop.handle_exception(std::make_exception_ptr(std::runtime_error("elsewhere")));
        } catch (const green::thread_error& e) {
            threw = std::string(e.what()).find("handle_exception") != std::string::npos;
        }
    }).join();
    EXPECT_TRUE(threw);
    EXPECT_EQ(handled, 0);
    loop.handle_exception(std::make_exception_ptr(std::runtime_error("here")));
    EXPECT_EQ(handled, 1);
}

TEST_F(io_loop, BadInput_a_thread_without_a_hub_gets_one_for_its_loop)
{
    std::thread([] {
        EXPECT_EQ(green::hub::installed(), nullptr);
        green::io_loop own;
        bool ran = false;
        own.add_callback([&] {
            ran = true;
            own.stop();
        });
        own.start();
        EXPECT_TRUE(ran);
        EXPECT_NE(green::hub::installed(), nullptr);
    }).join();
}

// An empty exception_ptr inside a catch block reports the exception being
// handled; with none, one line says so (std::rethrow_exception(nullptr) is
// undefined).
TEST_F(io_loop, handle_exception_of_an_empty_pointer_reports_the_current_exception)
{
    std::vector<std::string> seen;
    loop.set_error_handler(test::collect_errors(seen));
    try {
        throw std::runtime_error("current");
    } catch (...) {
        loop.handle_exception(nullptr);
    }
    EXPECT_EQ(seen, std::vector<std::string>{"current"});
}

TEST_F(io_loop, BadInput_handle_exception_with_no_exception_at_all)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            green::io_loop l;
            l.handle_exception(nullptr);
            std::_Exit(0);
        },
        testing::ExitedWithCode(0), "handle_exception: no exception given and none being handled");
}

// tornado calls run_sync's function at once: one that returns without
// waiting beats a zero timeout and a stop() left from before.
TEST_F(io_loop, run_sync_runs_its_function_at_once)
{
    bool ran = false;
    EXPECT_NO_THROW(loop.run_sync([&] { ran = true; }, 0ms));
    EXPECT_TRUE(ran);

    ran = false;
    loop.stop(); // while it was not running: ends the next run after one iteration
    EXPECT_NO_THROW(loop.run_sync([&] { ran = true; }));
    EXPECT_TRUE(ran);
}

TEST_F(io_loop, current_inside_run_sync_is_the_run_sync_loop)
{
    green::io_loop other;
    green::event other_started;
    boost::fibers::fiber b([&] {
        other.add_callback([&] { other_started.set(); });
        other.start();
    });
    green::io_loop* seen = nullptr;
    loop.run_sync(
        [&] {
            other_started.wait(); // the other loop started last
            seen = &green::io_loop::current();
        },
        5000ms);
    other.stop();
    b.join();
    EXPECT_EQ(seen, &loop);
}

// What the pending callbacks capture may call the loop as it goes: close()
// and the destructor destroy them outside the loop's mutex, and before the
// rest of the loop.
TEST_F(io_loop, closing_a_loop_whose_callbacks_call_it_as_they_are_destroyed)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            ::alarm(5); // a deadlock dies of SIGALRM
            green::context_t c;
            green::io_loop l;
            auto stream = std::make_shared<green::zmq_stream>(
                green::socket_t(c, zmq::socket_type::pull), l);
            stream->set_close_callback([&l] {
                l.add_callback([] {});
                l.stop();
            });
            l.add_callback([stream] {});
            stream.reset();
            l.close();
            std::_Exit(0);
        },
        testing::ExitedWithCode(0), "");
}

TEST_F(io_loop, destroying_a_loop_whose_callbacks_add_callbacks_as_they_are_destroyed)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            auto l = std::make_unique<green::io_loop>();
            struct adds_on_destruction {
                green::io_loop* loop = nullptr;
                ~adds_on_destruction()
                {
                    for (int i = 0; i < 64; ++i) // enough to reallocate the queue
                        loop->add_callback([] {});
                }
            };
            auto owner = std::make_shared<adds_on_destruction>();
            owner->loop = l.get();
            l->add_callback([owner] {});
            owner.reset();
            for (int i = 0; i < 3; ++i)
                l->add_callback([] {});
            l.reset();
            std::_Exit(0);
        },
        testing::ExitedWithCode(0), "");
}

// A kill is not a callback's error (gevent's GreenletExit): it ends the task
// that runs the loop, which keeps what it had not run for its next start().
TEST_F(io_loop, killing_the_task_that_runs_the_loop_inside_a_callback_ends_the_run)
{
    std::vector<std::string> reported;
    loop.set_error_handler([&](std::exception_ptr) { reported.emplace_back("reported"); });
    bool in_callback = false;
    bool next_ran = false;
    green::task t = green::spawn([&] {
        loop.add_callback([&] {
            in_callback = true;
            green::sleep_for(10s);
        });
        loop.add_callback([&] { next_ran = true; });
        loop.start();
    });
    ASSERT_TRUE(test::kill_once(t, [&] { return in_callback; }))
        << "the killed task still runs the loop";
    EXPECT_TRUE(reported.empty()) << "the kill went to the error handler";
    EXPECT_FALSE(next_ran);
    EXPECT_FALSE(loop.running());

    loop.add_callback([&] { loop.stop(); });
    watchdog guard(loop);
    loop.start();
    EXPECT_TRUE(next_ran);
}

// The same for a scoped timeout around start() that expires in a callback's
// wait; one inside the callback is the callback's error.
TEST_F(io_loop, a_scoped_timeout_around_start_ends_the_run_inside_a_callback)
{
    std::vector<std::string> reported;
    loop.set_error_handler(test::collect_errors(reported));
    int later = 0;
    loop.add_callback([&] {
        green::scoped_timeout inner(1ms);
        green::sleep_for(10s);
    });
    loop.call_later(0ms, [&] {
        try {
            green::sleep_for(10s);
        } catch (const green::timeout_error&) {
            ++later;
            throw;
        }
    });
    loop.call_later(0ms, [&] { ++later; });
    EXPECT_THROW(
        {
            green::scoped_timeout limit(500ms); // long enough to pass after the inner one
            loop.start();
        },
        green::timeout_error);
    EXPECT_EQ(reported.size(), 1u) << "only the callback's own scope is its error";
    EXPECT_EQ(later, 1) << "the timeout after the one the scope ended ran";
    loop.call_later(0ms, [&] { loop.stop(); });
    watchdog guard(loop);
    loop.start();
    EXPECT_EQ(later, 2) << "the timeout left by the ended run was lost";
}

// A run_sync whose run a scoped timeout ended before its function started
// has thrown: the function must not run in a later run.
TEST_F(io_loop, run_sync_ended_before_its_function_started_never_runs_it)
{
    loop.add_callback([] { green::sleep_for(10s); }); // queued ahead of run_sync's
    bool ran = false;
    {
        green::scoped_timeout limit(10ms);
        EXPECT_THROW(loop.run_sync([&] { ran = true; }), green::timeout_error);
    }
    loop.add_callback([&] { loop.stop(); });
    watchdog guard(loop);
    loop.start();
    EXPECT_FALSE(ran);
}

// A kill met in a wait of the error handler itself ends the run too.
TEST_F(io_loop, a_kill_inside_the_error_handler_ends_the_run)
{
    bool in_handler = false;
    loop.set_error_handler([&](std::exception_ptr) {
        in_handler = true;
        green::sleep_for(10s);
    });
    green::task t = green::spawn([&] {
        loop.add_callback([] { throw std::runtime_error("reported"); });
        loop.start();
    });
    EXPECT_TRUE(test::kill_once(t, [&] { return in_handler; }))
        << "the kill was reported as the handler's error";
    loop.set_error_handler(nullptr);
}
