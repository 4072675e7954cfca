#include "support.hpp"

#include <stdexcept>
#include <thread>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

using task_test = test::green_test;

} // namespace

TEST_F(task_test, spawn_join_and_what_escaped)
{
    int ran = 0;
    green::task ok = green::spawn([&] { ++ran; });
    green::task bad = green::spawn([] { throw std::runtime_error("boom"); });
    EXPECT_FALSE(ok.ready());
    EXPECT_TRUE(green::joinall({ok, bad}));
    EXPECT_EQ(ran, 1);
    EXPECT_TRUE(ok.ready());
    EXPECT_FALSE(ok.killed());
    EXPECT_EQ(ok.exception(), nullptr);
    ASSERT_NE(bad.exception(), nullptr);
    EXPECT_THROW(std::rethrow_exception(bad.exception()), std::runtime_error);
}

TEST_F(task_test, kill_wakes_a_fiber_parked_in_recv_and_frees_the_socket)
{
    green::socket_t push(ctx, zmq::socket_type::push), pull(ctx, zmq::socket_type::pull);
    const auto ep = test::unique_inproc();
    pull.bind(ep);
    push.connect(ep);
    bool after_recv = false;
    green::task t = green::spawn([&] {
        zmq::message_t m;
        (void)pull.recv(m);
        after_recv = true;
    });
    green::task queued = green::spawn([&] {
        zmq::message_t m;
        ASSERT_TRUE(pull.recv(m)); // waits for the recv direction behind t
        EXPECT_EQ(test::str(m), "for the second");
    });
    boost::this_fiber::yield(); // both park
    t.kill();
    EXPECT_TRUE(t.ready());
    EXPECT_TRUE(t.killed());
    EXPECT_FALSE(after_recv);
    push.send(zmq::str_buffer("for the second"));
    EXPECT_TRUE(queued.join());
    EXPECT_FALSE(queued.killed());
}

// A message begun is finished before a kill takes effect, but a later frame
// waits only when the message's pipe has gone: then it could wait for ever
// (for another peer), and a kill ends it, ending the message too.
TEST_F(task_test, kill_ends_a_send_whose_message_lost_its_pipe)
{
    green::socket_t push(ctx, zmq::socket_type::push);
    green::socket_t first(ctx, zmq::socket_type::pull), next(ctx, zmq::socket_type::pull);
    push.set(zmq::sockopt::linger, 0);
    const auto gone = test::unique_inproc();
    const auto ep = test::unique_inproc();
    first.bind(gone);
    next.bind(ep);
    push.connect(gone);
    bool parked = false;
    green::task t = green::spawn([&] {
        push.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
        push.disconnect(gone);
        parked = true;
        push.send(zmq::str_buffer("b"), zmq::send_flags::sndmore);
        ADD_FAILURE() << "the frame was sent";
    });
    boost::this_fiber::yield();
    ASSERT_TRUE(parked);
    t.kill(false);
    EXPECT_TRUE(t.join(10s)); // a hang guard
    EXPECT_TRUE(t.killed());
    push.connect(ep);
    EXPECT_TRUE(push.send(zmq::str_buffer("next")));
    next.set(zmq::sockopt::rcvtimeo, 10000);
    zmq::message_t m;
    ASSERT_TRUE(next.recv(m));
    EXPECT_EQ(test::str(m), "next");
}

TEST_F(task_test, a_kill_before_the_first_wait_is_raised_by_it)
{
    bool started = false;
    green::task t = green::spawn([&] {
        started = true;
        green::sleep_for(1h);
    });
    t.kill(false); // it has not run yet
    EXPECT_TRUE(t.join());
    EXPECT_TRUE(started);
    EXPECT_TRUE(t.killed());
}

TEST_F(task_test, a_fiber_that_catches_the_kill_goes_on_normally)
{
    green::event go;
    int waits_after = 0;
    green::task t = green::spawn([&] {
        try {
            green::sleep_for(1h);
        } catch (const green::fiber_cancelled&) {
        }
        EXPECT_TRUE(go.wait());
        ++waits_after;
    });
    boost::this_fiber::yield();
    t.kill(false);
    boost::this_fiber::yield(); // it handles the kill and waits again
    EXPECT_FALSE(t.ready());
    go.set();
    EXPECT_TRUE(t.join());
    EXPECT_FALSE(t.killed());
    EXPECT_EQ(waits_after, 1);
}

TEST_F(task_test, joinall_with_a_timeout)
{
    green::event release;
    std::vector<green::task> tasks{green::spawn([] {}),
                                   green::spawn([&] { EXPECT_TRUE(release.wait()); })};
    EXPECT_FALSE(green::joinall(tasks, 10ms));
    EXPECT_TRUE(tasks[0].ready());
    release.set();
    EXPECT_TRUE(green::joinall(tasks));
}

TEST_F(task_test, killall_ends_every_task)
{
    std::vector<green::task> tasks;
    for (int i = 0; i < 10; ++i)
        tasks.push_back(green::spawn([] { green::sleep_for(1h); }));
    green::killall(tasks);
    for (const auto& t : tasks)
        EXPECT_TRUE(t.killed());
}

TEST_F(task_test, a_pool_runs_at_most_size_tasks_at_once)
{
    green::pool p(2);
    std::vector<std::unique_ptr<green::event>> gates;
    for (int i = 0; i < 5; ++i)
        gates.push_back(std::make_unique<green::event>());
    std::size_t most = 0;
    int finished = 0;
    green::task spawner = green::spawn([&] {
        for (auto& gate : gates)
            p.spawn([&] {
                most = std::max(most, p.running());
                EXPECT_TRUE(gate->wait());
                ++finished;
            });
    });
    boost::this_fiber::yield();
    EXPECT_TRUE(p.full());
    EXPECT_FALSE(spawner.ready()); // parked in its third spawn
    for (auto& gate : gates) {
        gate->set();
        boost::this_fiber::yield();
    }
    EXPECT_TRUE(spawner.join());
    EXPECT_TRUE(p.join());
    EXPECT_EQ(finished, 5);
    EXPECT_EQ(most, 2u);
    EXPECT_EQ(p.free_count(), 2u);
}

TEST_F(task_test, a_pool_kills_what_runs_and_times_out_waits)
{
    green::pool p(1);
    green::task t = p.spawn([] { green::sleep_for(1h); });
    EXPECT_FALSE(p.wait_available(5ms));
    EXPECT_FALSE(p.join(5ms));
    p.kill();
    EXPECT_TRUE(t.killed());
    EXPECT_EQ(p.running(), 0u);
    EXPECT_TRUE(p.wait_available(0ms));
}

// A fiber parked in spawn() gets in as the kill ends the running task: that
// task is killed too, and kill() returns with none running (gevent's
// Group.kill repeats while the group has greenlets).
TEST_F(task_test, a_pool_kill_also_kills_what_gets_in_meanwhile)
{
    green::pool p(1);
    const auto sleeper = [] { green::sleep_for(1h); };
    green::task first = p.spawn(sleeper);
    green::task second;
    green::task spawner = green::spawn([&] { second = p.spawn(sleeper); });
    boost::this_fiber::yield(); // the spawner waits for room
    ASSERT_FALSE(spawner.ready());
    green::task killer = green::spawn([&] { p.kill(); });
    ASSERT_TRUE(killer.join(10s)) << "pool::kill never returned";
    EXPECT_TRUE(spawner.join(0ms));
    EXPECT_TRUE(first.killed());
    EXPECT_TRUE(second.killed());
    EXPECT_EQ(p.running(), 0u);
}

// Every task of a full pool parked in that pool's spawn() waits for room
// only its own end could make: no error, as the wait is not hopeless. A
// fiber outside the pool (here one that gave the pool a time to finish) may
// kill them, which ends each wait.
TEST_F(task_test, tasks_parked_in_their_own_full_pools_spawn_end_when_killed)
{
    green::pool p(2);
    int started = 0;
    const auto spawns_again = [&] {
        ++started;
        p.spawn([] {});
    };
    p.spawn(spawns_again);
    p.spawn(spawns_again);
    EXPECT_FALSE(p.join(5ms));
    EXPECT_EQ(started, 2);
    green::task killer = green::spawn([&] { p.kill(); });
    ASSERT_TRUE(killer.join(10s)) << "pool::kill never returned";
    EXPECT_EQ(started, 2);
    EXPECT_EQ(p.running(), 0u);
}

namespace {

// kill_all(self, other), called from the task self, kills and waits for
// other, then marks self, as a task's own kill() does: its next wait raises.
void expect_the_caller_killed_last(
    const std::function<green::task(std::function<void()>)>& spawn,
    const std::function<void(const green::task& self, const green::task& other)>& kill_all)
{
    green::task other = spawn([] { green::sleep_for(1h); });
    bool returned = false;
    green::task self;
    self = spawn([&] {
        kill_all(self, other);
        returned = true;
        green::sleep_for(1h); // the kill lands here
    });
    EXPECT_TRUE(self.join(10s));
    EXPECT_TRUE(returned);
    EXPECT_TRUE(other.killed());
    EXPECT_TRUE(self.killed());
}

} // namespace

TEST_F(task_test, a_pool_kill_from_inside_a_task_marks_the_caller)
{
    green::pool p(2);
    expect_the_caller_killed_last([&](std::function<void()> fn) { return p.spawn(std::move(fn)); },
                                  [&](const green::task&, const green::task&) { p.kill(); });
}

TEST_F(task_test, killall_from_a_listed_task_marks_the_caller_last)
{
    expect_the_caller_killed_last(
        [](std::function<void()> fn) { return green::spawn(std::move(fn)); },
        [](const green::task& self, const green::task& other) { green::killall({self, other}); });
}

// A pool destroyed while a fiber waits in its join(): the wait holds what
// the pool's tasks share, and ends with them.
TEST_F(task_test, a_pool_destroyed_while_a_fiber_joins_it_ends_that_join_with_its_tasks)
{
    auto p = std::make_unique<green::pool>(1);
    green::event go;
    p->spawn([&] { go.wait(); });
    bool joined = false;
    green::task joiner = green::spawn([&] { joined = p->join(); });
    boost::this_fiber::yield(); // it waits
    p.reset();
    go.set();
    EXPECT_TRUE(joiner.join(10s));
    EXPECT_TRUE(joined);
}

TEST_F(task_test, bad_input_is_rejected_with_a_clear_error)
{
    EXPECT_THROW(green::pool(0), std::invalid_argument);
    green::pool p(1);
    EXPECT_THROW(p.spawn(nullptr), std::invalid_argument);
    EXPECT_THROW(green::spawn(nullptr), std::invalid_argument);
    green::task none;
    EXPECT_THROW(none.join(), std::logic_error);
    green::task t = green::spawn([] { green::sleep_for(1h); });
    EXPECT_THROW(t.join(-5ms), std::invalid_argument);
    std::thread([&] { EXPECT_THROW(t.kill(), green::thread_error); }).join();
    green::task self;
    self = green::spawn([&] { EXPECT_THROW(self.join(), std::logic_error); });
    EXPECT_TRUE(self.join());
    // A pool's own task waiting for the pool would wait for itself.
    green::pool two(2);
    green::task inner = two.spawn([&] {
        try {
            two.join();
            ADD_FAILURE() << "pool::join returned inside the pool";
        } catch (const std::logic_error& e) {
            EXPECT_NE(std::string(e.what()).find("pool::join"), std::string::npos) << e.what();
        }
    });
    EXPECT_TRUE(two.join());
    EXPECT_TRUE(inner.ready());
    t.kill();
}

TEST_F(task_test, a_kill_after_the_fiber_was_woken_is_raised_by_its_next_wait)
{
    green::event first, second;
    bool first_returned = false;
    green::task t = green::spawn([&] {
        first_returned = first.wait();
        second.wait(); // the kill lands here
    });
    boost::this_fiber::yield(); // t parks on first
    first.set();                // t is ready, not yet running
    t.kill(false);
    EXPECT_TRUE(t.join());
    EXPECT_TRUE(first_returned);
    EXPECT_TRUE(t.killed());
}

// gevent's greenlet.kill() from inside only marks it (kill() with block
// would otherwise wait for itself): the fiber's next green wait ends it.
TEST_F(task_test, a_kill_from_inside_the_task_is_raised_by_its_next_wait)
{
    bool kill_returned = false;
    green::task self;
    self = green::spawn([&] {
        self.kill();
        kill_returned = true;
        green::sleep_for(1h);
    });
    EXPECT_TRUE(self.join(10s)); // a hang guard
    EXPECT_TRUE(kill_returned);
    EXPECT_TRUE(self.killed());
}

TEST_F(task_test, an_exception_that_escapes_is_reported_in_one_line)
{
    testing::internal::CaptureStderr();
    green::task bad = green::spawn([] { throw std::runtime_error("boom"); });
    EXPECT_TRUE(bad.join());
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(err.find('\n'), err.size() - 1) << err;
    EXPECT_NE(err.find("boom"), std::string::npos) << err;
}

TEST_F(task_test, BadInput_a_pool_of_another_thread_is_thread_error)
{
    green::pool p(1);
    std::thread([&] {
        EXPECT_THROW(p.spawn([] { ADD_FAILURE() << "spawned on another thread"; }),
                     green::thread_error);
        EXPECT_THROW(p.wait_available(0ms), green::thread_error);
        EXPECT_THROW(p.join(0ms), green::thread_error);
        EXPECT_THROW(p.kill(), green::thread_error);
    }).join();
    EXPECT_EQ(p.running(), 0u);
    EXPECT_TRUE(p.spawn([] {}).join());
}
