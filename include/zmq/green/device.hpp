// Devices that run in the calling fiber: queue/forwarder/streamer, proxy with
// capture, steerable proxy and monitored queue. Other fibers keep running.
#pragma once

#include <zmq/green/socket.hpp>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace zmq::green {

// libzmq's device types (ZMQ_STREAMER, ZMQ_FORWARDER, ZMQ_QUEUE).
enum class device_type : int { streamer = ZMQ_STREAMER, forwarder = ZMQ_FORWARDER, queue = ZMQ_QUEUE };

// Per-frame counters, in the order of libzmq's STATISTICS reply.
struct proxy_statistics {
    std::uint64_t frontend_msgs_in = 0;
    std::uint64_t frontend_bytes_in = 0;
    std::uint64_t frontend_msgs_out = 0;
    std::uint64_t frontend_bytes_out = 0;
    std::uint64_t backend_msgs_in = 0;
    std::uint64_t backend_bytes_in = 0;
    std::uint64_t backend_msgs_out = 0;
    std::uint64_t backend_bytes_out = 0;

    std::array<std::uint64_t, 8> to_array() const noexcept
    {
        return {frontend_msgs_in,  frontend_bytes_in, frontend_msgs_out, frontend_bytes_out,
                backend_msgs_in,   backend_bytes_in,  backend_msgs_out,  backend_bytes_out};
    }
};

// Every function below forwards until the context is shut down (ETERM), one
// of its sockets is closed (ENOTSOCK) or, for proxy_steerable, TERMINATE
// arrives; then it returns normally. Other errors are thrown.
//
// A message is taken from a source only when its destination reports
// POLLOUT, so a destination at its high-water mark holds back its own
// direction and never the other one. When frontend and backend are the same
// socket (e.g. a REP that echoes), each message is sent back on it.

// QUEUE forwards both ways; FORWARDER and STREAMER forward frontend to
// backend only (unlike pyzmq and libzmq, the type is honoured).
void device(device_type type, socket_ref frontend, socket_ref backend);
// The same with libzmq's integer constants; an unknown type is error_t(EINVAL).
void device(int type, socket_ref frontend, socket_ref backend);

// As zmq_proxy: both ways; every frame is first copied to capture (if given),
// keeping its more flag.
void proxy(socket_ref frontend, socket_ref backend, socket_ref capture = {});

// As zmq_proxy_steerable. Commands on control are single frames:
//   PAUSE, RESUME, TERMINATE, STATISTICS (reply: 8 native-endian uint64 frames
//   in proxy_statistics' order, counted per frame).
// As libzmq 4.3.5 does, unknown or multi-frame commands are ignored; a REP
// control socket gets an empty reply to every command but STATISTICS, so it
// stays usable.
void proxy_steerable(socket_ref frontend, socket_ref backend, socket_ref capture,
                     socket_ref control);

// pyzmq's monitored_queue: a QUEUE that also sends every forwarded message to
// mon, as [prefix] + the frames sent to the destination. With ROUTER on both
// sides the first two frames (the two identities) are swapped, so a message
// addressed to a peer of the other side reaches it. An empty prefix is
// std::invalid_argument (a subscriber could not tell the directions apart).
void monitored_queue(socket_ref in, socket_ref out, socket_ref mon,
                     const std::string& in_prefix = "in", const std::string& out_prefix = "out");

} // namespace zmq::green
