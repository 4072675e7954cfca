// What the fuzz targets share: the input's message encoding, bounded green
// waits, and a failure that libFuzzer reports as a crash.
#pragma once

#include <zmq/green.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace fuzz {

using strings = std::vector<std::string>;

// Longer than any healthy round trip, shorter than libFuzzer's -timeout: a
// hang is reported with what was awaited.
constexpr std::chrono::milliseconds patience{5000};

[[noreturn]] inline void fail(const char* format, ...)
{
    std::va_list args;
    va_start(args, format);
    std::fputs("fuzz target: ", stderr);
    std::vfprintf(stderr, format, args);
    std::fputc('\n', stderr);
    va_end(args);
    std::abort();
}

inline void check(bool ok, const char* what)
{
    if (!ok)
        fail("check failed: %s", what);
}

// One message of the input, to be sent from one of two sides.
struct message {
    int side = 0;
    strings frames;
};

// The input as messages. Each frame is a header byte h followed by h >> 2
// bytes (0 to 63, fewer at the end of the input): bit 0 of the first
// frame's header picks the side, bit 1 ends the message. Bounded, so that
// every input runs fast.
inline std::vector<message> split_messages(const std::uint8_t* data, std::size_t size,
                                           std::size_t max_messages = 64,
                                           std::size_t max_frames = 16)
{
    std::vector<message> out;
    std::size_t i = 0;
    while (i < size && out.size() < max_messages) {
        message m;
        m.side = data[i] & 1;
        for (bool last = false; !last && i < size;) {
            const std::uint8_t h = data[i++];
            last = (h & 2) != 0 || m.frames.size() + 1 == max_frames;
            const std::size_t n = std::min<std::size_t>(h >> 2, size - i);
            m.frames.emplace_back(reinterpret_cast<const char*>(data + i), n);
            i += n;
        }
        out.push_back(std::move(m));
    }
    return out;
}

inline void send(zmq::green::socket_ref s, const strings& frames)
{
    std::vector<zmq::const_buffer> bufs;
    for (const auto& f : frames)
        bufs.push_back(zmq::buffer(f));
    if (!zmq::green::send_multipart(s, bufs))
        fail("send_multipart did not queue a message");
}

// The next message, waiting at most `patience`.
inline strings recv(zmq::green::socket_ref s, const char* what)
{
    if (s.poll(ZMQ_POLLIN, patience) == 0)
        fail("no message within %lld ms: %s", static_cast<long long>(patience.count()), what);
    std::vector<zmq::message_t> msgs;
    if (!zmq::green::recv_multipart(s, std::back_inserter(msgs), zmq::recv_flags::dontwait))
        fail("POLLIN without a message: %s", what);
    strings out;
    for (auto& m : msgs)
        out.push_back(m.to_string());
    return out;
}

// A message if one is waiting now.
inline bool try_recv(zmq::green::socket_ref s, strings& out)
{
    std::vector<zmq::message_t> msgs;
    if (!zmq::green::recv_multipart(s, std::back_inserter(msgs), zmq::recv_flags::dontwait))
        return false;
    out.clear();
    for (auto& m : msgs)
        out.push_back(m.to_string());
    return true;
}

inline zmq::green::socket_t make_socket(zmq::green::context_t& ctx, int type)
{
    zmq::green::socket_t s(ctx, type);
    s.set(zmq::sockopt::linger, 0);
    return s;
}

inline std::string inproc(const char* name)
{
    static int n = 0;
    return std::string("inproc://fuzz-") + name + "-" + std::to_string(n++);
}

// Runs fn on a thread kept for the whole process, and waits for it. The
// devices under test are fibers of that thread, parked between inputs. They
// must not live on libFuzzer's thread: at exit, a thread's fiber scheduler
// waits for its fibers, which never end. This thread is simply abandoned.
inline void on_worker(const std::function<void()>& fn)
{
    struct worker {
        std::mutex mutex;
        std::condition_variable cv;
        const std::function<void()>* job = nullptr;
        bool done = false;
        std::thread thread{[this] {
            for (;;) {
                std::unique_lock<std::mutex> lock(mutex);
                // Blocks the thread, not a fiber: between inputs its fibers
                // have nothing to do.
                cv.wait(lock, [this] { return job != nullptr; });
                const auto* current = job;
                lock.unlock();
                (*current)();
                lock.lock();
                job = nullptr;
                done = true;
                cv.notify_all();
            }
        }};
    };
    static auto* w = new worker; // never destroyed, never joined
    std::unique_lock<std::mutex> lock(w->mutex);
    w->job = &fn;
    w->done = false;
    w->cv.notify_all();
    w->cv.wait(lock, [] { return w->done; });
}

// The rig that selector picks among configs, built on first use. Call it on
// the worker thread. Rigs and their context are never destroyed: they live
// until the process exits.
template<class Rig, class Config, std::size_t N>
Rig& pick_rig(const Config (&configs)[N], std::uint8_t selector)
{
    static auto* ctx = new zmq::green::context_t;
    static Rig* rigs[N] = {};
    Rig*& r = rigs[selector % N];
    if (r == nullptr)
        r = new Rig(*ctx, configs[selector % N]);
    return *r;
}

} // namespace fuzz
