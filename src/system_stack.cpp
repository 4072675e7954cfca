#include "system_stack.hpp"

#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>

#include <exception>
#include <memory>
#include <new>
#include <utility>

namespace zmq::green::detail {

namespace {

// Set when this thread's system stack is gone: Boost.Fiber's per-thread
// state is older, so at thread exit it is destroyed later, and the fibers it
// then runs to their end may still connect. Trivially destructible, so it
// stays readable to the end of the thread.
thread_local bool system_stack_gone = false;

class system_stack {
public:
    system_stack()
    {
        try {
            ctx_ = boost::context::fiber(
                std::allocator_arg, boost::context::fixedsize_stack(256 * 1024),
                [this](boost::context::fiber&& caller) { return serve(std::move(caller)); });
            ctx_ = std::move(ctx_).resume(); // to the loop's first resume
        } catch (const std::bad_alloc&) {
            // No stack: the calls run on the caller's, as they would anyway.
        }
    }

    // Ends the loop rather than unwind it: destroying a suspended context
    // throws Boost's forced_unwind through it, whose layout depends on
    // NDEBUG, which the library and its user need not share.
    ~system_stack()
    {
        system_stack_gone = true;
        if (ctx_) {
            fn_ = nullptr;
            ctx_ = std::move(ctx_).resume();
        }
    }

    system_stack(const system_stack&) = delete;
    system_stack& operator=(const system_stack&) = delete;

    void call(void (*fn)(void*), void* arg)
    {
        if (running_ || !ctx_) { // already on it, or there is none
            fn(arg);
            return;
        }
        fn_ = fn;
        arg_ = arg;
        running_ = true;
        ctx_ = std::move(ctx_).resume();
        running_ = false;
        if (error_)
            std::rethrow_exception(std::exchange(error_, nullptr));
    }

private:
    // Runs on the system stack: one call per resume, until fn_ is null.
    boost::context::fiber serve(boost::context::fiber&& caller)
    {
        for (;;) {
            caller = std::move(caller).resume();
            if (fn_ == nullptr)
                return std::move(caller);
            try {
                fn_(arg_);
            } catch (...) {
                error_ = std::current_exception();
            }
        }
    }

    void (*fn_)(void*) = nullptr;
    void* arg_ = nullptr;
    bool running_ = false;
    std::exception_ptr error_;
    boost::context::fiber ctx_;
};

} // namespace

void call_on_system_stack(void (*fn)(void*), void* arg)
{
    if (fn == nullptr)
        return;
    if (system_stack_gone) {
        fn(arg);
        return;
    }
    static thread_local system_stack stack;
    stack.call(fn, arg);
}

} // namespace zmq::green::detail
