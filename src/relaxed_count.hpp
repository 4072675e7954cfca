// A statistic that one thread counts and any thread may read.
#pragma once

#include <atomic>
#include <cstdint>

namespace zmq::green::detail {

// Only the owning thread adds: a relaxed load and store cost what a plain
// field does, where an atomic increment would lock the bus on every event.
class relaxed_count {
public:
    void add(std::uint64_t n = 1) noexcept
    {
        value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    std::uint64_t get() const noexcept { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> value_{0};
};

} // namespace zmq::green::detail
