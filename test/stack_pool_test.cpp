#include "support.hpp"

#include <zmq/green/stack_pool.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace green = zmq::green;
using test::green_test;

namespace {

const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

// Pages of [low, low + bytes) that are resident.
std::size_t resident_pages(const char* low, std::size_t bytes)
{
    std::vector<unsigned char> vec(bytes / page);
    if (::mincore(const_cast<char*>(low), bytes, vec.data()) != 0)
        return SIZE_MAX;
    std::size_t n = 0;
    for (unsigned char v : vec)
        n += v & 1;
    return n;
}

// The permissions /proc/self/maps gives the mapping holding addr.
std::string permissions_at(const void* addr)
{
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
        std::istringstream in(line);
        std::uintptr_t lo = 0, hi = 0;
        char dash = 0;
        std::string perms;
        in >> std::hex >> lo >> dash >> hi >> perms;
        if (a >= lo && a < hi)
            return perms;
    }
    return "unmapped";
}

} // namespace

class stack_pool : public green_test {};

TEST_F(stack_pool, stacks_are_untouched_until_a_fiber_uses_them)
{
    green::stack_pool pool(64 * 1024);
    std::vector<boost::context::stack_context> stacks;
    for (int i = 0; i < 100; ++i)
        stacks.push_back(pool.allocate());
    for (auto& s : stacks) {
        EXPECT_EQ(s.size, 64u * 1024);
        const char* low = static_cast<char*>(s.sp) - s.size;
        EXPECT_EQ(resident_pages(low, s.size), 0u);
        EXPECT_EQ(permissions_at(low - 1), "---p") << "no guard page below the stack";
        EXPECT_EQ(permissions_at(low), "rw-p");
    }
    for (auto& s : stacks)
        pool.deallocate(s);
}

// Hands out the pool's stacks and remembers them.
struct recording_allocator {
    green::stack_pool pool;
    std::vector<boost::context::stack_context>* given;
    boost::context::stack_context allocate()
    {
        given->push_back(pool.allocate());
        return given->back();
    }
    void deallocate(boost::context::stack_context& s) noexcept { pool.deallocate(s); }
};

TEST_F(stack_pool, a_fiber_parked_in_recv_touches_a_few_pages)
{
    std::vector<boost::context::stack_context> given;
    recording_allocator salloc{green::stack_pool(64 * 1024), &given};
    green::socket_t pull(ctx, zmq::socket_type::pull);
    pull.bind(test::unique_inproc());
    constexpr int fibers = 200;
    std::vector<boost::fibers::fiber> parked;
    for (int i = 0; i < fibers; ++i)
        parked.emplace_back(std::allocator_arg, salloc, [&] {
            zmq::message_t m;
            EXPECT_THROW((void)pull.recv(m), zmq::error_t); // closed below
        });
    boost::this_fiber::yield(); // all of them park
    ASSERT_EQ(given.size(), static_cast<std::size_t>(fibers));
    std::size_t touched = 0;
    for (const auto& s : given)
        touched += resident_pages(static_cast<char*>(s.sp) - s.size, s.size);
    EXPECT_LE(touched, static_cast<std::size_t>(fibers) * 4)
        << "pages touched by " << fibers << " parked fibers";
    pull.close();
    for (auto& f : parked)
        f.join();
}

TEST_F(stack_pool, stacks_return_to_the_pool_and_it_doubles_when_empty)
{
    green::stack_pool pool(32 * 1024);
    EXPECT_EQ(pool.stack_size(), 32u * 1024);
    for (int round = 0; round < 50; ++round) {
        std::vector<boost::fibers::fiber> fibers;
        for (int i = 0; i < 10; ++i)
            fibers.emplace_back(std::allocator_arg, pool, [] { boost::this_fiber::yield(); });
        for (auto& f : fibers)
            f.join();
    }
    EXPECT_EQ(pool.capacity(), 16u); // 500 fibers, never more than 10 at once
    std::vector<boost::context::stack_context> stacks;
    for (int i = 0; i < 17; ++i)
        stacks.push_back(pool.allocate());
    EXPECT_EQ(pool.capacity(), 32u);
    for (auto& s : stacks)
        pool.deallocate(s);
}

TEST_F(stack_pool, spawn_runs_tasks_on_pool_stacks)
{
    green::stack_pool pool;
    int ran = 0;
    std::vector<green::task> tasks;
    for (int i = 0; i < 20; ++i)
        tasks.push_back(green::spawn(std::allocator_arg, pool, [&] { ++ran; }));
    green::joinall(tasks);
    EXPECT_EQ(ran, 20);
}

TEST_F(stack_pool, BadInput_stacks_below_16_kib_are_refused)
{
    try {
        green::stack_pool pool(4096);
        FAIL() << "a 4 KiB stack pool was accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("16 KiB"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(green::stack_pool(16 * 1024));
}
