// Helpers of the stress suite: scale, seeds, and turning a stall into a failure.
#pragma once

#include "../support.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

// Sanitized builds run every scenario with the message counts divided by this
// (test/stress/CMakeLists.txt sets it); a plain build runs the full counts.
#ifndef ZMQ_GREEN_STRESS_DIVISOR
#define ZMQ_GREEN_STRESS_DIVISOR 1
#endif

namespace stress {

constexpr int divisor = ZMQ_GREEN_STRESS_DIVISOR;

// The seed of a randomized test: ZMQ_GREEN_STRESS_SEED if set, otherwise a
// fresh one. Printed, and recorded in the test's XML, so that a failure can
// be replayed.
inline std::uint32_t seed()
{
    std::uint32_t s;
    if (const char* fixed = std::getenv("ZMQ_GREEN_STRESS_SEED"))
        s = static_cast<std::uint32_t>(std::strtoul(fixed, nullptr, 10));
    else
        s = std::random_device{}();
    std::cout << "seed " << s << " (replay with ZMQ_GREEN_STRESS_SEED=" << s << ")" << std::endl;
    ::testing::Test::RecordProperty("seed", std::to_string(s));
    return s;
}

// A lost wake-up leaves every fiber parked and the hub asleep: the test would
// only end at ctest's TIMEOUT, saying nothing. This fiber watches a progress
// counter; when it stands still for `limit`, it fails the test and turns the
// hub's fallback re-check back on, so that the parked fibers are rescued (the
// rescues counter then names the missed edges) and the test can end.
// Its own timer wake-ups do not mask a lost edge: a timer wakes only its fiber.
class stall_guard {
public:
    stall_guard(const std::uint64_t& progress, std::chrono::milliseconds limit,
                std::string what)
        : fiber_([this, &progress, limit, what = std::move(what)] {
              auto last = progress;
              auto since = std::chrono::steady_clock::now();
              std::unique_lock<boost::fibers::mutex> lock(mutex_);
              while (!cv_.wait_for(lock, std::chrono::milliseconds{100}, [this] { return done_; })) {
                  const auto now = std::chrono::steady_clock::now();
                  if (progress != last) {
                      last = progress;
                      since = now;
                  } else if (now - since > limit && !fired_) {
                      fired_ = true;
                      ADD_FAILURE() << what << ": no progress for " << limit.count()
                                    << " ms at " << progress
                                    << "; re-enabling the fallback re-check to finish";
                      zmq::green::hub::current().set_fallback_interval(
                          std::chrono::milliseconds{100});
                  }
              }
          })
    {
    }
    ~stall_guard()
    {
        {
            std::lock_guard<boost::fibers::mutex> lock(mutex_);
            done_ = true;
        }
        cv_.notify_all();
        fiber_.join();
    }
    stall_guard(const stall_guard&) = delete;
    stall_guard& operator=(const stall_guard&) = delete;

private:
    boost::fibers::mutex mutex_;
    boost::fibers::condition_variable cv_;
    bool done_ = false;
    bool fired_ = false;
    boost::fibers::fiber fiber_;
};

// Runs the test with the hub's fallback re-check off, and restores it.
class no_fallback {
public:
    no_fallback() : old_(zmq::green::hub::current().fallback_interval())
    {
        zmq::green::hub::current().set_fallback_interval(std::chrono::milliseconds{0});
    }
    ~no_fallback() { zmq::green::hub::current().set_fallback_interval(old_); }
    no_fallback(const no_fallback&) = delete;
    no_fallback& operator=(const no_fallback&) = delete;

private:
    std::chrono::milliseconds old_;
};

// A green_test that also fails if the test leaves an fd open. The hub's own
// fds (epoll, eventfd) live as long as the thread, so it is installed first.
class fd_checked_test : public test::green_test {
protected:
    void SetUp() override
    {
        test::green_test::SetUp();
        zmq::green::hub::current();
        fds_before_ = test::open_fds();
    }
    void TearDown() override
    {
        EXPECT_EQ(test::open_fds(), fds_before_) << "fds leaked";
        test::green_test::TearDown();
    }

private:
    int fds_before_ = 0;
};

// The seeded torture programs: a hang guard that needs no hub, and the seeds.
namespace torture {

// The hang guard: a thread, since a lost wake-up leaves a hub asleep.
inline std::atomic<std::uint64_t> progress{0};
inline std::atomic<std::uint32_t> current_seed{0};
inline std::atomic<std::int64_t> seed_started{0}; // steady_clock ticks; 0 between seeds
inline std::function<void()> dump_state; // read racily by the hang guard, just before abort
constexpr int max_slots = 64;
inline std::array<std::atomic<const char*>, max_slots> last_ops{};

inline void op(int slot, const char* what)
{
    ++progress;
    if (slot >= 0 && slot < max_slots)
        last_ops[static_cast<size_t>(slot)].store(what);
}

inline void begin_seed(std::uint32_t seed)
{
    current_seed = seed;
    for (auto& o : last_ops)
        o.store(nullptr);
    seed_started = std::chrono::steady_clock::now().time_since_epoch().count();
}

// Aborts, printing the seed and each slot's last operation, after 10 s without
// progress or a seed that runs 10 s (a seed takes well under a second).
inline void start_hang_guard()
{
    static std::once_flag once;
    std::call_once(once, [] {
        std::thread([] {
            using namespace std::chrono_literals;
            auto last = progress.load();
            auto since = std::chrono::steady_clock::now();
            for (;;) {
                std::this_thread::sleep_for(100ms);
                const auto now = std::chrono::steady_clock::now();
                if (progress.load() != last) {
                    last = progress.load();
                    since = now;
                }
                const auto started = seed_started.load();
                const bool stalled = started != 0 && now - since > 10s;
                const bool spinning =
                    started != 0
                    && now.time_since_epoch().count() - started
                           > std::chrono::steady_clock::duration(10s).count();
                if (stalled || spinning) {
                    std::cerr << (stalled ? "HANG" : "SPIN") << ": seed " << current_seed.load()
                              << "; last operations:\n";
                    for (int i = 0; i < max_slots; ++i)
                        if (const char* w = last_ops[static_cast<size_t>(i)].load())
                            std::cerr << "  slot " << i << ": " << w << "\n";
                    if (dump_state)
                        dump_state();
                    if (std::getenv("ZMQ_GREEN_TORTURE_PAUSE"))
                        std::this_thread::sleep_for(120s); // time to attach a debugger
                    std::abort();
                }
            }
        }).detach();
    });
}

inline unsigned long env_or(const char* name, unsigned long fallback)
{
    const char* v = std::getenv(name);
    return v ? std::strtoul(v, nullptr, 10) : fallback;
}

// ZMQ_GREEN_TORTURE_LIST (comma-separated), else ZMQ_GREEN_TORTURE_SEEDS seeds
// from ZMQ_GREEN_TORTURE_FIRST (default: 1 to count).
inline std::vector<std::uint32_t> seeds(std::uint32_t count)
{
    std::vector<std::uint32_t> out;
    if (const char* list = std::getenv("ZMQ_GREEN_TORTURE_LIST")) {
        for (char* end = nullptr;; list = end + 1) {
            out.push_back(static_cast<std::uint32_t>(std::strtoul(list, &end, 10)));
            if (*end != ',')
                break;
        }
        return out;
    }
    const auto first = static_cast<std::uint32_t>(env_or("ZMQ_GREEN_TORTURE_FIRST", 1));
    count = static_cast<std::uint32_t>(env_or("ZMQ_GREEN_TORTURE_SEEDS", count));
    for (std::uint32_t s = first; s < first + count; ++s)
        out.push_back(s);
    return out;
}

// A torture message's first frame: which stream (pair, flow) and sender it
// belongs to, its place in that sender's sequence, and how many frames the
// message has (the others carry seq and their index).
struct header {
    std::uint32_t stream;
    std::uint32_t sender;
    std::uint32_t seq;
    std::uint32_t frames;
};
constexpr std::uint32_t end_marker = 0xffffffff; // as sender: no more messages

inline std::vector<zmq::message_t> make_message(const header& h)
{
    std::vector<zmq::message_t> frames;
    frames.emplace_back(&h, sizeof h);
    for (std::uint32_t i = 1; i < h.frames; ++i) {
        const std::uint32_t body[2] = {h.seq, i};
        frames.emplace_back(body, sizeof body);
    }
    return frames;
}

// Runs run_seed(seed) for each of seeds(20) under the hang guard, stopping
// at the first seed that fails (ZMQ_GREEN_TORTURE_VERBOSE names each one).
template<class Run>
void run_seeds(Run run_seed)
{
    start_hang_guard();
    const bool verbose = std::getenv("ZMQ_GREEN_TORTURE_VERBOSE") != nullptr;
    for (const std::uint32_t s : seeds(20)) {
        if (verbose)
            std::cerr << "seed " << s << std::endl;
        run_seed(s);
        seed_started = 0;
        if (::testing::Test::HasFailure()) {
            std::cerr << "failed at seed " << s << std::endl;
            break;
        }
    }
}

} // namespace torture

} // namespace stress
