// Fiber stacks for thousands of fibers: reused, and resident only where used.
#pragma once

#include <boost/context/stack_context.hpp>

#include <cstddef>
#include <memory>

namespace zmq::green {

namespace detail {
class stack_storage;
}

// A Boost.Context stack allocator for boost::fibers::fiber and spawn(), as in
//   boost::fibers::fiber(std::allocator_arg, pool, fn)
// Stacks are carved from large anonymous mappings, each above a guard page
// that turns an overflow into a fault, and come back to the pool when their
// fiber ends. Unlike Boost's pooled_fixedsize_stack, which keeps its free list
// inside the stacks, the pool never writes to a stack: a fiber costs only the
// pages its own calls touch, one page for one parked in recv (green sockets
// run libzmq's deeper connect and bind on a stack of the thread). Up to
// warm_stacks free stacks keep their pages for the next fibers; a stack
// returned while that many are free gives its pages back to the system, so
// that the stacks of a burst of thousands of fibers do not stay resident
// after it. Copies share the pool, which lives until the last fiber using it
// has ended; a pool may serve several threads.
class stack_pool {
public:
    static constexpr std::size_t warm_stacks = 64;

    // stack_size is rounded up to whole pages; std::invalid_argument below
    // 16 KiB, too small for libzmq's calls.
    explicit stack_pool(std::size_t stack_size = 64 * 1024);

    boost::context::stack_context allocate();
    void deallocate(boost::context::stack_context& sctx) noexcept;

    std::size_t stack_size() const noexcept;
    // Stacks mapped so far, free or in use.
    std::size_t capacity() const noexcept;

private:
    std::shared_ptr<detail::stack_storage> storage_;
};

} // namespace zmq::green
