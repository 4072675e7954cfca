// Helpers of the stress suite: scale, seeds, and turning a stall into a failure.
#pragma once

#include "../support.hpp"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>

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

} // namespace stress
