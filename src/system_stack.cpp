#include "system_stack.hpp"

#include <boost/context/fiber.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>

#include <memory>

namespace zmq::green::detail {

namespace {

class system_stack {
public:
    system_stack()
        : ctx_(std::allocator_arg, boost::context::protected_fixedsize_stack(256 * 1024),
               [this](boost::context::fiber&& caller) {
                   for (;;) {
                       caller = std::move(caller).resume();
                       if (fn_ == nullptr)
                           return std::move(caller);
                       fn_(arg_);
                   }
               })
    {
        ctx_ = std::move(ctx_).resume(); // to the loop's first resume
    }

    // Ends the loop rather than unwind it: destroying a suspended context
    // throws Boost's forced_unwind through it, whose layout depends on
    // NDEBUG, which the library and its user need not share.
    ~system_stack()
    {
        fn_ = nullptr;
        ctx_ = std::move(ctx_).resume();
    }

    system_stack(const system_stack&) = delete;
    system_stack& operator=(const system_stack&) = delete;

    void call(void (*fn)(void*), void* arg)
    {
        if (running_) { // already on it
            fn(arg);
            return;
        }
        fn_ = fn != nullptr ? fn : [](void*) {};
        arg_ = arg;
        running_ = true;
        ctx_ = std::move(ctx_).resume();
        running_ = false;
    }

private:
    void (*fn_)(void*) = nullptr;
    void* arg_ = nullptr;
    bool running_ = false;
    boost::context::fiber ctx_;
};

} // namespace

void call_on_system_stack(void (*fn)(void*), void* arg)
{
    static thread_local system_stack stack;
    stack.call(fn, arg);
}

} // namespace zmq::green::detail
