// Ten SUB sockets change their subscriptions 10,000 times in all, at random,
// against a PUB that keeps publishing, while fibers are parked in recv on
// every SUB. pyzmq met libzmq asserts (mtrie) under such storms; here nothing
// may abort, and a subscription made afterwards must still receive.
#include "stress.hpp"

#include <random>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace green = zmq::green;

namespace {

constexpr int subscribers = 10;
constexpr int changes_per_subscriber = 1000;

// Prefixes of each other, so that the subscription tries split and merge.
const std::vector<std::string> topics = {"", "a", "ab", "abc", "abcd", "abd", "b", "ba",
                                         "bab", "c", "final-not", "x"};

} // namespace

class subscribe_storm : public test::green_test {};

TEST_F(subscribe_storm, ten_thousand_random_changes_then_a_subscription_still_receives)
{
    std::mt19937 rng(stress::seed());
    green::socket_t pub(ctx, zmq::socket_type::pub);
    pub.set(zmq::sockopt::linger, 0);
    const std::string inproc = test::unique_inproc();
    pub.bind(inproc);
    pub.bind("tcp://127.0.0.1:*");
    const std::string tcp = pub.get(zmq::sockopt::last_endpoint);
    std::vector<green::socket_t> subs;
    for (int i = 0; i < subscribers; ++i) {
        subs.emplace_back(ctx, zmq::socket_type::sub);
        subs.back().set(zmq::sockopt::linger, 0);
        subs.back().connect(i % 2 ? inproc : tcp);
    }

    int storms_running = subscribers;
    int got_final = 0;
    std::uint64_t received = 0;
    std::vector<boost::fibers::fiber> fibers;
    for (int i = 0; i < subscribers; ++i) {
        // Parked in recv through the storm; done at the first "final".
        fibers.emplace_back([&, i] {
            for (;;) {
                zmq::message_t m;
                ASSERT_TRUE(subs[i].recv(m));
                if (m.to_string() == "final") {
                    ++got_final;
                    return;
                }
                ++received;
            }
        });
        fibers.emplace_back([&, i, seed = rng()] {
            std::mt19937 local(seed);
            std::uniform_int_distribution<size_t> pick(0, topics.size() - 1);
            for (int n = 0; n < changes_per_subscriber; ++n) {
                const auto& topic = topics[pick(local)];
                if (local() % 2)
                    subs[i].set(zmq::sockopt::subscribe, topic);
                else
                    subs[i].set(zmq::sockopt::unsubscribe, topic);
                boost::this_fiber::yield();
            }
            subs[i].set(zmq::sockopt::subscribe, "final");
            --storms_running;
        });
    }
    fibers.emplace_back([&] {
        std::uniform_int_distribution<size_t> pick(0, topics.size() - 1);
        while (storms_running > 0) {
            pub.send(zmq::buffer(topics[pick(rng)] + "-payload"));
            boost::this_fiber::yield();
        }
        // Subscriptions travel to the PUB asynchronously: repeat until each
        // SUB has its "final" (the pause only paces the repeats).
        while (got_final < subscribers) {
            pub.send(zmq::str_buffer("final"));
            boost::this_fiber::sleep_for(1ms);
        }
    });
    for (auto& f : fibers)
        f.join();
    EXPECT_EQ(got_final, subscribers);
    EXPECT_GT(received, 0u) << "no subscription of the storm ever received";
}
