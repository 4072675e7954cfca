// What zmq_stream and periodic_callback need from io_loop beyond its public API.
#pragma once

#include <zmq/green/io_loop.hpp>

namespace zmq::green::detail {

class socket_core;

struct loop_access {
    // The handler of core's socket will find events ready on its next call,
    // as its owner's own calls have just shown: the loop then calls it
    // without reading ZMQ_EVENTS, which costs two syscalls inside libzmq. A
    // wrong guess costs one call that finds nothing, after which the loop
    // reads the level as usual.
    static void presume_ready(io_loop& loop, socket_core& core, short events) noexcept;
    // stop() was called: a stream ends its burst, so that no message comes
    // after the one whose callback stopped the loop.
    static bool stopping(const io_loop& loop) noexcept;
    // A kill or a scoped timeout of the loop's fiber escaped a callback: the
    // run ends as soon as the stream returns, and nothing more may run.
    static bool ending_run(const io_loop& loop) noexcept;
    // thread_error unless called on the loop's thread.
    static void check_thread(const io_loop& loop, const char* what);
};

} // namespace zmq::green::detail
