// Lets AddressSanitizer follow Boost.Fiber's stack switches.
//
// ASan keeps one stack per thread. When a fiber throws, the unwound frames
// skip their epilogues, and __asan_handle_no_return would clear the poison
// they leave; on a stack ASan does not know, it gives up ("ASan is ignoring
// requested __asan_handle_no_return"), and later frames at those addresses
// are reported as stack-buffer-overflow or use-after-scope that never
// happened. Boost annotates its switches for ASan only in the ucontext
// flavour; Debian's Boost 1.74 ships fcontext. So, in test executables of a
// -fsanitize=address build, this file stands in for the three fcontext
// entry points that libboost_fiber.so calls through its PLT (make_fcontext,
// jump_fcontext, ontop_fcontext) and announces each switch with
// __sanitizer_start_switch_fiber and __sanitizer_finish_switch_fiber, as
// Boost's ucontext flavour does. A new fiber finishes its switch in a
// trampoline that then calls Boost's entry function.
//
// Compiled without -fsanitize=address: the wrappers' own frames span the
// switch. Its bookkeeping is per thread: fibers never migrate here.
#include <boost/context/detail/fcontext.hpp>
#include <sanitizer/common_interface_defs.h>

#include <dlfcn.h>
#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

using boost::context::detail::fcontext_t;
using boost::context::detail::transfer_t;

namespace {

using entry_fn = void (*)(transfer_t);
using make_fn = fcontext_t (*)(void*, std::size_t, entry_fn);
using jump_fn = transfer_t (*)(fcontext_t, void*);
using ontop_fn = transfer_t (*)(fcontext_t, void*, transfer_t (*)(transfer_t));

// Null in a program that does not link Boost.Context (a test's helper
// process): then nothing calls the wrappers.
template<class Fn>
Fn real(const char* name)
{
    void* sym = ::dlsym(RTLD_NEXT, name);
    Fn fn = nullptr;
    std::memcpy(&fn, &sym, sizeof fn); // object to function pointer, as POSIX allows
    return fn;
}

make_fn next_make;
jump_fn next_jump;
ontop_fn next_ontop;

__attribute__((constructor)) void find_real_functions()
{
    next_make = real<make_fn>("make_fcontext");
    next_jump = real<jump_fn>("jump_fcontext");
    next_ontop = real<ontop_fn>("ontop_fcontext");
}

struct fiber_stack {
    std::uintptr_t bottom;
    entry_fn entry;
};

struct bounds {
    const void* bottom;
    std::size_t size;
};

// This thread's fiber stacks by top address, and its own stack.
struct thread_stacks {
    std::map<std::uintptr_t, fiber_stack> fibers;
    bounds own{nullptr, 0};

    const fiber_stack* find(std::uintptr_t p, std::uintptr_t* top) const
    {
        const auto it = fibers.lower_bound(p);
        if (it == fibers.end() || it->second.bottom > p)
            return nullptr;
        *top = it->first;
        return &it->second;
    }

    bounds of(fcontext_t to)
    {
        std::uintptr_t top = 0;
        if (const fiber_stack* s = find(reinterpret_cast<std::uintptr_t>(to), &top))
            return {reinterpret_cast<const void*>(s->bottom), top - s->bottom};
        if (own.bottom == nullptr) {
            pthread_attr_t attr;
            void* addr = nullptr;
            std::size_t size = 0;
            if (::pthread_getattr_np(::pthread_self(), &attr) == 0) {
                ::pthread_attr_getstack(&attr, &addr, &size);
                ::pthread_attr_destroy(&attr);
            }
            own = {addr, size};
        }
        return own; // not a fiber stack: the thread's own
    }

    void add(std::uintptr_t bottom, std::uintptr_t top, entry_fn entry)
    {
        // A stack that overlaps a registered one reuses its memory: that
        // fiber has ended.
        for (auto it = fibers.lower_bound(bottom); it != fibers.end() && it->second.bottom < top;)
            it = fibers.erase(it);
        fibers[top] = {bottom, entry};
    }
};

thread_local thread_stacks stacks;

// Where every new fiber starts: the switch into it ends here.
void trampoline(transfer_t t)
{
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
    int here;
    std::uintptr_t top = 0;
    const fiber_stack* s = stacks.find(reinterpret_cast<std::uintptr_t>(&here), &top);
    if (s == nullptr) {
        std::fprintf(stderr, "asan_fibers: a fiber started on an unknown stack\n");
        std::abort();
    }
    s->entry(t);
}

} // namespace

extern "C" {

fcontext_t make_fcontext(void* sp, std::size_t size, entry_fn fn)
{
    const auto top = reinterpret_cast<std::uintptr_t>(sp);
    stacks.add(top - size, top, fn);
    return next_make(sp, size, trampoline);
}

transfer_t jump_fcontext(fcontext_t to, void* vp)
{
    const bounds b = stacks.of(to);
    __sanitizer_start_switch_fiber(nullptr, b.bottom, b.size);
    const transfer_t t = next_jump(to, vp);
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
    return t;
}

transfer_t ontop_fcontext(fcontext_t to, void* vp, transfer_t (*fn)(transfer_t))
{
    const bounds b = stacks.of(to);
    __sanitizer_start_switch_fiber(nullptr, b.bottom, b.size);
    const transfer_t t = next_ontop(to, vp, fn);
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
    return t;
}

} // extern "C"
