// Fiber stacks for thousands of fibers: reused, and resident only where used.
#pragma once

#include <boost/context/stack_context.hpp>

#include <cstddef>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

namespace zmq::green {

namespace detail {
class stack_storage;
}

// Thrown by stack_pool::allocate when no stack with a guard page can be
// mapped: the process is out of address space, or at the kernel's limit on
// mappings (vm.max_map_count, 65530 by default), against which each stack
// and its guard page count twice, for some 32,000 stacks in a process. A
// std::bad_alloc, as Boost's stack allocators throw, whose what() says which
// limit was met.
class stack_pool_exhausted : public std::bad_alloc {
public:
    explicit stack_pool_exhausted(const std::string& what) : what_(what) {}
    const char* what() const noexcept override { return what_.what(); }

private:
    std::runtime_error what_; // a string whose copies cannot throw
};

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
    // 16 KiB, too small for libzmq's calls, or above half the address space.
    explicit stack_pool(std::size_t stack_size = 64 * 1024);

    // A handle: copies share the pool, and so does a move, which leaves the
    // source usable (fiber(std::allocator_arg, std::move(pool), fn) takes
    // the allocator by rvalue).
    stack_pool(const stack_pool&) = default;
    stack_pool& operator=(const stack_pool&) = default;
    stack_pool(stack_pool&& other) noexcept : storage_(other.storage_) {}
    stack_pool& operator=(stack_pool&& other) noexcept
    {
        storage_ = other.storage_;
        return *this;
    }
    ~stack_pool() = default;

    // Throws stack_pool_exhausted when the pool must grow and cannot.
    boost::context::stack_context allocate();
    void deallocate(boost::context::stack_context& sctx) noexcept;

    std::size_t stack_size() const noexcept;
    // Stacks mapped so far, free or in use.
    std::size_t capacity() const noexcept;

private:
    std::shared_ptr<detail::stack_storage> storage_;
};

} // namespace zmq::green
