// Lets ThreadSanitizer follow Boost.Fiber's stack switches and its mutex.
//
// TSan keeps one shadow call stack per thread; a fiber switch it does not
// know about mixes the call stacks of all the fibers of the thread, and its
// reports show wrong stacks (frames of the racing fiber missing, others'
// frames in their place). Boost
// annotates its switches for TSan only from 1.76 on, and only in the
// ucontext flavour; Debian's Boost 1.74 ships fcontext. So, in test
// executables of a -fsanitize=thread build, this file stands in for the
// three fcontext entry points that libboost_fiber.so calls through its PLT
// (make_fcontext, jump_fcontext, ontop_fcontext): it gives every fiber stack
// a TSan fiber and announces each switch with __tsan_switch_to_fiber before
// handing over to the real function in libboost_context.so.
//
// boost::fibers::mutex is a spinlock inside libboost_fiber.so, which is not
// instrumented: TSan would see no order between two fibers of different
// threads that use it (promise/future, condition variables), and report
// their accesses as races. Its lock/unlock/try_lock are interposed the same
// way. Each tells TSan it both acquires and releases the mutex: inside, all
// three take the mutex's wait-queue spinlock, and through it a contended
// lock() hands its fiber to the unlock() that will wake it.
//
// It must be compiled without -fsanitize=thread: an instrumented wrapper
// would pop the new fiber's shadow stack on return. Its bookkeeping is
// per thread (fibers never migrate here) and takes no lock that TSan could
// mistake for synchronization between threads.
#include <boost/context/detail/fcontext.hpp>
#include <boost/fiber/context.hpp>
#include <sanitizer/tsan_interface.h>

#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

using boost::context::detail::fcontext_t;
using boost::context::detail::transfer_t;

namespace {

using make_fn = fcontext_t (*)(void*, std::size_t, void (*)(transfer_t));
using jump_fn = transfer_t (*)(fcontext_t, void*);
using ontop_fn = transfer_t (*)(fcontext_t, void*, transfer_t (*)(transfer_t));

template<class Fn>
Fn real(const char* name)
{
    void* sym = ::dlsym(RTLD_NEXT, name);
    if (sym == nullptr) {
        std::fprintf(stderr, "tsan_fibers: %s not found\n", name);
        std::abort();
    }
    Fn fn;
    std::memcpy(&fn, &sym, sizeof fn); // object to function pointer, as POSIX allows
    return fn;
}

// Looked up before main, not in function-local statics: their guards are
// synchronization that TSan would see.
make_fn next_make;
jump_fn next_jump;
ontop_fn next_ontop;

using mutex_fn = void (*)(void*);
using try_lock_fn = bool (*)(void*);
constexpr const char* mutex_lock = "_ZN5boost6fibers5mutex4lockEv";
constexpr const char* mutex_unlock = "_ZN5boost6fibers5mutex6unlockEv";
constexpr const char* mutex_try_lock = "_ZN5boost6fibers5mutex8try_lockEv";
mutex_fn next_lock;
mutex_fn next_unlock;
try_lock_fn next_try_lock;

__attribute__((constructor)) void find_real_functions()
{
    next_make = real<make_fn>("make_fcontext");
    next_jump = real<jump_fn>("jump_fcontext");
    next_ontop = real<ontop_fn>("ontop_fcontext");
    next_lock = real<mutex_fn>(mutex_lock);
    next_unlock = real<mutex_fn>(mutex_unlock);
    next_try_lock = real<try_lock_fn>(mutex_try_lock);
}

struct fiber_stack {
    std::uintptr_t bottom;
    void* fiber;
};

// This thread's fiber stacks by top address, and the TSan fiber of the
// thread's own stack.
struct thread_fibers {
    std::map<std::uintptr_t, fiber_stack> stacks;
    void* own = nullptr;

    ~thread_fibers()
    {
        void* current = __tsan_get_current_fiber();
        for (auto& [top, s] : stacks)
            if (s.fiber != current)
                __tsan_destroy_fiber(s.fiber);
    }

    // The TSan fiber whose stack holds the saved context `to`.
    void* owner_of(fcontext_t to)
    {
        const auto p = reinterpret_cast<std::uintptr_t>(to);
        const auto it = stacks.lower_bound(p);
        if (it != stacks.end() && it->second.bottom <= p)
            return it->second.fiber;
        return own; // not a fiber stack: the thread's own
    }

    void add(std::uintptr_t bottom, std::uintptr_t top)
    {
        // A stack that overlaps a registered one reuses its memory: that
        // fiber has ended.
        for (auto it = stacks.lower_bound(bottom); it != stacks.end() && it->second.bottom < top;) {
            __tsan_destroy_fiber(it->second.fiber);
            it = stacks.erase(it);
        }
        stacks[top] = {bottom, __tsan_create_fiber(0)};
    }
};

thread_local thread_fibers fibers;

void switch_to(fcontext_t to)
{
    if (fibers.own == nullptr)
        fibers.own = __tsan_get_current_fiber(); // the first switch leaves the thread's stack
    // Flag 0: the switch orders the two fibers, as it does in fact.
    __tsan_switch_to_fiber(fibers.owner_of(to), 0);
}

} // namespace

extern "C" {

fcontext_t make_fcontext(void* sp, std::size_t size, void (*fn)(transfer_t))
{
    const auto top = reinterpret_cast<std::uintptr_t>(sp);
    fibers.add(top - size, top);
    return next_make(sp, size, fn);
}

transfer_t jump_fcontext(fcontext_t to, void* vp)
{
    switch_to(to);
    return next_jump(to, vp);
}

transfer_t ontop_fcontext(fcontext_t to, void* vp, transfer_t (*fn)(transfer_t))
{
    switch_to(to);
    return next_ontop(to, vp, fn);
}

} // extern "C"

// boost::fibers::mutex's members, by their symbol names: a member function
// takes `this` as its first argument.
void fiber_mutex_lock(void* self) __asm__("_ZN5boost6fibers5mutex4lockEv");
void fiber_mutex_unlock(void* self) __asm__("_ZN5boost6fibers5mutex6unlockEv");
bool fiber_mutex_try_lock(void* self) __asm__("_ZN5boost6fibers5mutex8try_lockEv");

void fiber_mutex_lock(void* self)
{
    // A thread's first fiber call creates its scheduler, inside lock():
    // create it before publishing, so that the unlock() that wakes this
    // thread sees it.
    boost::fibers::context::active();
    __tsan_release(self);
    next_lock(self);
    __tsan_acquire(self);
}

void fiber_mutex_unlock(void* self)
{
    __tsan_acquire(self);
    __tsan_release(self);
    next_unlock(self);
}

bool fiber_mutex_try_lock(void* self)
{
    boost::fibers::context::active();
    __tsan_release(self);
    const bool locked = next_try_lock(self);
    __tsan_acquire(self);
    return locked;
}
