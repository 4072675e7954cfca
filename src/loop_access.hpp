// What zmq_stream and periodic_callback need from io_loop beyond its public API.
#pragma once

#include <zmq/green/io_loop.hpp>

#include <cstdint>

namespace zmq::green::detail {

class socket_core;

struct loop_access {
    // The handler of core's socket will find events ready on its next call,
    // as its owner's own calls have just shown: the loop then calls it
    // without reading ZMQ_EVENTS, which costs two syscalls inside libzmq. A
    // wrong guess costs one call that finds nothing, after which the loop
    // reads the level as usual.
    static void presume_ready(io_loop& loop, socket_core& core, short events) noexcept;
    // A send on core's socket failed for want of room, whatever the level
    // says: the loop calls the handler for ZMQ_POLLOUT again only after a
    // signal since edges_before (core's edge count before the send), or a
    // blind re-check, not for a level that may speak of another peer.
    static void send_refused(io_loop& loop, socket_core& core,
                             std::uint64_t edges_before) noexcept;
    // A send went through after a refusal: the level is believed again.
    static void send_taken(io_loop& loop, socket_core& core) noexcept;
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
