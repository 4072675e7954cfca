// A stack per thread for libzmq's deep calls, so that fiber stacks stay small.
#pragma once

#include <type_traits>

namespace zmq::green::detail {

// Runs fn(arg) on this thread's system stack and returns to the caller's.
// fn must not park its fiber: it runs outside of any fiber. What it throws
// is rethrown on the caller's stack.
void call_on_system_stack(void (*fn)(void*), void* arg);

// zmq_connect and zmq_bind reach 4 to 7 KiB into libzmq (address parsing,
// sessions, pipes): run on a fiber's stack, they would keep a second page of
// it resident for the fiber's life, in a design that wants one page per
// parked client. The two switches, 22 ns, are nothing next to those calls.
template<class F>
void on_system_stack(F&& fn)
{
    call_on_system_stack([](void* f) { (*static_cast<std::remove_reference_t<F>*>(f))(); },
                         &fn);
}

} // namespace zmq::green::detail
