// Shutdown from every direction: a context shut down by another thread, a
// socket closed under its waiters, a loop stopped with callbacks queued,
// background devices stopped mid-stream. Everything parked must end with a
// clear error, nothing may hang, and no fd may stay open.
#include "stress.hpp"

#include <zmq/green/devices.hpp>

#include <algorithm>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace green = zmq::green;
namespace devices = zmq::green::devices;

namespace {

// How a parked fiber waits: each must end with the socket's error.
enum class way { recv, recv_multipart, poll, send, send_multipart };
constexpr way ways[] = {way::recv, way::recv_multipart, way::poll, way::send,
                        way::send_multipart};

bool sends(way w) { return w == way::send || w == way::send_multipart; }

void wait_once(green::socket_t& s, way w)
{
    zmq::message_t m;
    switch (w) {
    case way::recv:
        (void)s.recv(m);
        break;
    case way::recv_multipart: {
        std::vector<zmq::message_t> parts;
        (void)green::recv_multipart(s, std::back_inserter(parts));
        break;
    }
    case way::poll:
        (void)s.poll(ZMQ_POLLIN);
        break;
    case way::send:
        (void)s.send(zmq::str_buffer("x"));
        break;
    case way::send_multipart: {
        const std::vector<zmq::const_buffer> parts{zmq::str_buffer("a"), zmq::str_buffer("b")};
        (void)green::send_multipart(s, parts);
        break;
    }
    }
    ADD_FAILURE() << "a wait returned instead of failing";
}

// Spawns n fibers waiting in every way on the sockets (receivers on pulls,
// senders on pushes), then a fiber that fires `parked` once all of them have
// run up to their park. Each fiber counts the errno it ended with.
std::vector<boost::fibers::fiber> park_fibers(int n, std::vector<green::socket_t>& pulls,
                                              std::vector<green::socket_t>& pushes,
                                              std::vector<int>& errors,
                                              std::function<void()> parked)
{
    std::vector<boost::fibers::fiber> fibers;
    for (int i = 0; i < n; ++i) {
        const way w = ways[i % std::size(ways)];
        auto& sockets = sends(w) ? pushes : pulls;
        auto& s = sockets[static_cast<size_t>(i / std::size(ways)) % sockets.size()];
        fibers.emplace_back([&s, w, &errors] {
            try {
                wait_once(s, w);
            } catch (const zmq::error_t& e) {
                errors.push_back(e.num());
            }
        });
    }
    fibers.emplace_back(std::move(parked));
    return fibers;
}

int count_of(const std::vector<int>& errors, int err)
{
    return static_cast<int>(std::count(errors.begin(), errors.end(), err));
}

} // namespace

class termination : public stress::fd_checked_test {};

TEST_F(termination, context_shut_down_by_another_thread_ends_5000_waiters_with_eterm)
{
    constexpr int waiters = 5000;
    green::context_t context;
    // No peers anywhere: receivers find nothing, senders no pipe. Half on
    // inproc endpoints, half on tcp, a fifth of them with timeouts pending.
    std::vector<green::socket_t> pulls, pushes;
    for (int i = 0; i < 40; ++i) {
        pulls.emplace_back(context, zmq::socket_type::pull);
        pulls.back().set(zmq::sockopt::linger, 0);
        pulls.back().bind(i % 2 ? test::unique_inproc() : std::string("tcp://127.0.0.1:*"));
        if (i % 5 == 0)
            pulls.back().set(zmq::sockopt::rcvtimeo, 600000);
    }
    for (int i = 0; i < 10; ++i) {
        pushes.emplace_back(context, zmq::socket_type::push);
        pushes.back().set(zmq::sockopt::linger, 0);
    }
    std::vector<int> errors;
    std::promise<void> all_parked;
    auto fibers = park_fibers(waiters, pulls, pushes, errors, [&] { all_parked.set_value(); });
    std::thread other([&, parked = all_parked.get_future()] {
        parked.wait();
        context.shutdown();
    });
    for (auto& f : fibers)
        f.join();
    other.join();
    EXPECT_EQ(count_of(errors, ETERM), waiters);
    EXPECT_EQ(errors.size(), static_cast<size_t>(waiters));
    pulls.clear();
    pushes.clear();
    context.close();
}

TEST_F(termination, socket_closed_by_another_fiber_ends_its_waiters_with_enotsock)
{
    constexpr int waiters = 2000;
    green::context_t context;
    std::vector<green::socket_t> pulls, pushes;
    pulls.emplace_back(context, zmq::socket_type::pull);
    pulls.emplace_back(context, zmq::socket_type::pull);
    pulls[1].set(zmq::sockopt::rcvtimeo, 600000); // deadlines to unlink too
    pushes.emplace_back(context, zmq::socket_type::push);
    for (auto* group : {&pulls, &pushes})
        for (auto& s : *group)
            s.set(zmq::sockopt::linger, 0);
    pulls[0].bind(test::unique_inproc());
    pulls[1].bind("tcp://127.0.0.1:*");
    std::vector<int> errors;
    auto fibers = park_fibers(waiters, pulls, pushes, errors, [&] {
        for (auto* group : {&pulls, &pushes})
            for (auto& s : *group)
                s.close();
    });
    for (auto& f : fibers)
        f.join();
    EXPECT_EQ(count_of(errors, ENOTSOCK), waiters);
    EXPECT_EQ(errors.size(), static_cast<size_t>(waiters));
    context.close();
}

// What happens to callbacks still queued when the loop stops: they stay
// queued, and run once each, in order, when the loop starts again. close()
// drops them unrun, destroying what they hold.
TEST_F(termination, io_loop_stopped_by_another_thread_keeps_its_queued_callbacks)
{
    constexpr int threads = 4;
    constexpr int per_thread = 5000;
    green::io_loop loop;
    std::vector<int> runs(threads * per_thread, 0);
    auto add = [&](int n) { loop.add_callback([&runs, n] { ++runs[n]; }); };
    // Thread 0 holds the loop inside one callback while it queues the second
    // half of its callbacks and stops the loop: those are still queued when
    // start() returns.
    std::promise<void> holding, release;
    std::vector<std::thread> adders;
    loop.add_callback([&] {
        for (int t = 0; t < threads; ++t)
            adders.emplace_back([&, t] {
                const int first = t * per_thread;
                const int half = t == 0 ? per_thread / 2 : per_thread;
                for (int i = 0; i < half; ++i)
                    add(first + i);
                if (t != 0)
                    return;
                loop.add_callback([&] {
                    holding.set_value();
                    release.get_future().wait();
                });
                holding.get_future().wait();
                for (int i = half; i < per_thread; ++i) {
                    add(first + i);
                    if (i == per_thread * 3 / 4)
                        loop.stop();
                }
                release.set_value();
            });
    });
    loop.start();
    for (auto& t : adders)
        t.join();
    EXPECT_EQ(std::count_if(runs.begin(), runs.end(), [](int n) { return n > 1; }), 0);
    EXPECT_EQ(std::count(runs.begin() + per_thread / 2, runs.begin() + per_thread, 1), 0)
        << "callbacks queued after the loop's last batch ran although it was stopped";
    std::cout << std::count(runs.begin(), runs.end(), 0) << " of " << runs.size()
              << " callbacks were still queued when the loop stopped" << std::endl;

    // Restarted, the loop runs every queued callback, each exactly once.
    loop.add_callback([&] { loop.stop(); });
    loop.start();
    EXPECT_EQ(std::count(runs.begin(), runs.end(), 1), static_cast<long>(runs.size()));

    // Closed, it destroys the queued ones without calling them.
    auto token = std::make_shared<int>(0);
    std::thread([&] {
        for (int i = 0; i < 100; ++i)
            loop.add_callback([token] { ++*token; });
    }).join();
    EXPECT_EQ(token.use_count(), 101);
    loop.close();
    EXPECT_EQ(token.use_count(), 1);
    EXPECT_EQ(*token, 0);
}

namespace {

struct device_case {
    const char* name;
    std::function<std::unique_ptr<devices::background_device>()> make;
    bool forks;
};

} // namespace

class device_stop : public stress::fd_checked_test,
                        public ::testing::WithParamInterface<device_case> {};

// A background device forwarding a stream is stopped by its owner: stop()
// returns, the device is done, and the owner's fibers still parked on the
// sockets it fed end with ENOTSOCK when those are closed.
TEST_P(device_stop, stopped_mid_stream)
{
    if (GetParam().forks)
        SKIP_FORK_UNDER_ASAN();
    {
        auto dev = GetParam().make();
        dev->bind_in("tcp://127.0.0.1:*");
        dev->bind_out("tcp://127.0.0.1:*");
        dev->start();
        green::context_t context;
        green::socket_t push(context, zmq::socket_type::push), pull(context, zmq::socket_type::pull);
        for (auto* s : {&push, &pull}) {
            s->set(zmq::sockopt::linger, 0);
            s->set(zmq::sockopt::sndhwm, 10);
            s->set(zmq::sockopt::rcvhwm, 10);
        }
        push.connect(dev->endpoints().at(0).endpoint);
        pull.connect(dev->endpoints().at(1).endpoint);

        std::uint64_t received = 0;
        boost::fibers::mutex mutex;
        boost::fibers::condition_variable progressed;
        std::vector<int> errors;
        test::run_fibers({[&] {
                              try {
                                  for (long seq = 0;; ++seq)
                                      push.send(zmq::buffer(std::to_string(seq)));
                              } catch (const zmq::error_t& e) {
                                  errors.push_back(e.num());
                              }
                          },
                          [&] {
                              try {
                                  for (long seq = 0;; ++seq) {
                                      zmq::message_t m;
                                      (void)pull.recv(m);
                                      EXPECT_EQ(m.to_string(), std::to_string(seq));
                                      ++received;
                                      progressed.notify_all();
                                  }
                              } catch (const zmq::error_t& e) {
                                  errors.push_back(e.num());
                              }
                          },
                          [&] {
                              {
                                  std::unique_lock<boost::fibers::mutex> lock(mutex);
                                  progressed.wait(lock, [&] { return received >= 1000; });
                              }
                              dev->stop();
                              EXPECT_TRUE(dev->done());
                              EXPECT_TRUE(dev->join(0ms));
                              push.close();
                              pull.close();
                          }});
        EXPECT_EQ(count_of(errors, ENOTSOCK), 2);
        context.close();
    }
}

INSTANTIATE_TEST_SUITE_P(
    , device_stop,
    ::testing::Values(
        device_case{"fiber_device",
                    [] { return std::make_unique<devices::fiber_device>(ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH); },
                    false},
        device_case{"thread_device",
                    [] { return std::make_unique<devices::thread_device>(ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH); },
                    false},
        device_case{"thread_proxy_steerable",
                    [] { return std::make_unique<devices::thread_proxy_steerable>(ZMQ_PULL, ZMQ_PUSH); },
                    false},
        device_case{"thread_monitored_queue",
                    [] { return std::make_unique<devices::thread_monitored_queue>(ZMQ_PULL, ZMQ_PUSH); },
                    false},
        device_case{"process_device",
                    [] { return std::make_unique<devices::process_device>(ZMQ_STREAMER, ZMQ_PULL, ZMQ_PUSH); },
                    true}),
    [](const auto& param_info) { return std::string(param_info.param.name); });
