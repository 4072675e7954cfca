#include "support.hpp"

#include <thread>

using namespace std::chrono_literals;
namespace green = zmq::green;

TEST(event, set_wakes_every_waiter_and_stays_set)
{
    green::event ev;
    int woken = 0;
    std::vector<std::function<void()>> fibers;
    for (int i = 0; i < 3; ++i)
        fibers.emplace_back([&] {
            EXPECT_TRUE(ev.wait());
            ++woken;
        });
    fibers.emplace_back([&] {
        EXPECT_EQ(woken, 0);
        ev.set();
    });
    test::run_fibers(fibers);
    EXPECT_EQ(woken, 3);
    EXPECT_TRUE(ev.is_set());
    EXPECT_TRUE(ev.wait(0ms));
    ev.clear();
    EXPECT_FALSE(ev.is_set());
    EXPECT_FALSE(ev.wait(5ms));
}

TEST(event, a_set_then_clear_before_the_waiter_runs_still_wakes_it_with_true)
{
    green::event ev;
    bool result = false;
    test::run_fibers({[&] { result = ev.wait(); },
                      [&] {
                          ev.set();
                          ev.clear();
                      }});
    EXPECT_TRUE(result);
}

TEST(event, bad_input_other_threads_and_negative_timeouts_are_rejected)
{
    green::event ev;
    EXPECT_THROW(ev.wait(-2ms), std::invalid_argument);
    std::thread([&] { EXPECT_THROW(ev.set(), green::thread_error); }).join();
    EXPECT_FALSE(ev.is_set());
}

// Destroying an event that fibers wait for is a mistake; the waiters learn it
// from a clear error instead of waiting for ever or reading freed memory.
TEST(event, BadInput_destroying_a_waited_event_wakes_its_waiters_with_an_error)
{
    auto ev = std::make_unique<green::event>();
    std::vector<std::string> errors;
    auto waiter = [&](std::chrono::milliseconds timeout) {
        return [&, timeout] {
            try {
                ev->wait(timeout);
                ADD_FAILURE() << "wait returned";
            } catch (const std::logic_error& e) {
                errors.push_back(e.what());
            }
        };
    };
    test::run_fibers({waiter(-1ms), waiter(1h), [&] { ev.reset(); }});
    ASSERT_EQ(errors.size(), 2u);
    for (const auto& e : errors)
        EXPECT_EQ(e, "zmq::green::event: destroyed while a fiber waited for it");
}
