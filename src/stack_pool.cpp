#include <zmq/green/stack_pool.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace zmq::green {

namespace detail {

class stack_storage {
public:
    explicit stack_storage(std::size_t stack_size)
        : page_(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))),
          stack_size_((stack_size + page_ - 1) / page_ * page_), slot_(stack_size_ + page_)
    {
        warm_.reserve(stack_pool::warm_stacks);
    }

    ~stack_storage()
    {
        for (const auto& [base, bytes] : mappings_)
            ::munmap(base, bytes);
    }

    stack_storage(const stack_storage&) = delete;
    stack_storage& operator=(const stack_storage&) = delete;

    boost::context::stack_context allocate()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (warm_.empty() && cold_.empty())
            grow();
        auto& from = warm_.empty() ? cold_ : warm_;
        boost::context::stack_context sctx;
        sctx.sp = from.back();
        sctx.size = stack_size_;
        from.pop_back();
        return sctx;
    }

    void deallocate(boost::context::stack_context& sctx) noexcept
    {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            // Both lists are reserved: pushing back cannot allocate.
            if (warm_.size() < stack_pool::warm_stacks) {
                warm_.push_back(sctx.sp);
                return;
            }
        }
        // A fiber that ends has touched 6 KiB of its stack, in Boost.Fiber's
        // terminate(): after a burst of thousands, free stacks would hold
        // more than parked fibers do. Beyond the warm ones, one madvise gives
        // a stack's pages back.
        ::madvise(static_cast<char*>(sctx.sp) - stack_size_, stack_size_, MADV_DONTNEED);
        std::lock_guard<std::mutex> lock(mutex_);
        cold_.push_back(sctx.sp);
    }

    std::size_t stack_size() const noexcept { return stack_size_; }

    std::size_t capacity() const noexcept
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return capacity_;
    }

private:
    // Doubles the pool (at least 16 stacks, at most 4,096 more at a time), so
    // that ten thousand fibers cost a handful of mappings.
    void grow()
    {
        const std::size_t count = std::clamp<std::size_t>(capacity_, 16, 4096);
        cold_.reserve(capacity_ + count);
        mappings_.reserve(mappings_.size() + 1);
        if (slot_ > SIZE_MAX / count)
            exhausted(count, "mmap", ENOMEM);
        const std::size_t bytes = count * slot_;
        void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED)
            exhausted(count, "mmap", errno);
        auto* p = static_cast<char*>(base);
        std::size_t guarded = 0;
        // The lowest page of each slot is its guard: stacks grow down. Each
        // guard splits the mapping, and past the kernel's limit on mappings
        // mprotect fails: a stack without a guard would overflow silently
        // into its neighbour, so the slots left go back unused.
        for (; guarded < count; ++guarded, p += slot_)
            if (::mprotect(p, page_, PROT_NONE) != 0)
                break;
        const int err = errno;
        if (guarded < count)
            ::munmap(p, bytes - guarded * slot_); // shrinks the mapping: no new one
        if (guarded == 0)
            exhausted(count, "mprotect", err);
        mappings_.emplace_back(base, guarded * slot_);
        p = static_cast<char*>(base);
        for (std::size_t i = 0; i < guarded; ++i, p += slot_)
            cold_.push_back(p + slot_);
        capacity_ += guarded;
    }

    [[noreturn]] void exhausted(std::size_t count, const char* call, int err) const
    {
        std::string limit = "?";
        std::ifstream("/proc/sys/vm/max_map_count") >> limit;
        throw stack_pool_exhausted(
            "zmq::green::stack_pool: cannot map " + std::to_string(count) + " more stacks of "
            + std::to_string(stack_size_) + " bytes, each with a guard page, beyond the "
            + std::to_string(capacity_) + " it has (" + call + ": " + std::strerror(err)
            + "): the process is out of address space, or at the kernel's limit on mappings, "
              "vm.max_map_count = "
            + limit + ", which each stack counts against twice");
    }

    const std::size_t page_;
    const std::size_t stack_size_;
    const std::size_t slot_; // guard page + stack
    mutable std::mutex mutex_;
    // Free stacks, by their tops: the warm ones keep the pages their last
    // fiber touched, the cold ones have none.
    std::vector<void*> warm_;
    std::vector<void*> cold_;
    std::vector<std::pair<void*, std::size_t>> mappings_;
    std::size_t capacity_ = 0;
};

} // namespace detail

stack_pool::stack_pool(std::size_t stack_size)
{
    if (stack_size < 16 * 1024)
        throw std::invalid_argument("zmq::green::stack_pool: stack size " + std::to_string(stack_size)
                                    + " is below the 16 KiB minimum");
    // Rounded up to pages and given a guard page, a larger one would wrap.
    if (stack_size > SIZE_MAX / 2)
        throw std::invalid_argument("zmq::green::stack_pool: stack size " + std::to_string(stack_size)
                                    + " is above half the address space");
    storage_ = std::make_shared<detail::stack_storage>(stack_size);
}

boost::context::stack_context stack_pool::allocate() { return storage_->allocate(); }

void stack_pool::deallocate(boost::context::stack_context& sctx) noexcept
{
    storage_->deallocate(sctx);
}

std::size_t stack_pool::stack_size() const noexcept { return storage_->stack_size(); }

std::size_t stack_pool::capacity() const noexcept { return storage_->capacity(); }

} // namespace zmq::green
