// Devices that run in the calling fiber: queue/forwarder/streamer, proxy with
// capture, steerable proxy and monitored queue. Other fibers keep running.
#pragma once

#include <zmq/green/socket.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

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
// Before forwarding, each checks its sockets: a missing one is
// error_t(ENOTSOCK); std::invalid_argument, naming the socket, if a type
// cannot do its part (no direction can forward: e.g. a STREAMER from a PUSH;
// a capture or monitor that cannot send; a control socket that cannot take
// single-frame commands: PUB, PUSH, REQ, ROUTER, STREAM) or if the capture,
// monitor or control socket is also the frontend or backend.
//
// A message the destination refuses because it names an unknown peer
// (EHOSTUNREACH: a ROUTER with ZMQ_ROUTER_MANDATORY, a STREAM) is dropped, as
// a plain ROUTER drops it; capture and monitor still get it, and the device
// goes on. One peer's bad address never ends the device for the others.
//
// A message is taken from a source only when its destination reports
// POLLOUT, so a destination at its high-water mark holds back its own
// direction and never the other one. When frontend and backend are the same
// socket (e.g. a REP that echoes), each message is sent back on it and, as
// libzmq counts it, counted as received by the frontend and sent by the
// backend.

// QUEUE forwards both ways; FORWARDER and STREAMER forward frontend to
// backend only (unlike pyzmq and libzmq, the type is honoured). A value
// outside the enum is error_t(EINVAL).
void device(device_type type, socket_ref frontend, socket_ref backend);
// The same with libzmq's integer constants; an unknown type is error_t(EINVAL).
void device(int type, socket_ref frontend, socket_ref backend);

// As zmq_proxy: both ways; every frame is first copied to capture (if given),
// keeping its more flag.
void proxy(socket_ref frontend, socket_ref backend, socket_ref capture = {});

// As zmq_proxy_steerable. Commands on control are single frames:
//   PAUSE, RESUME, TERMINATE, STATISTICS (reply: 8 native-endian uint64 frames
//   in proxy_statistics' order, counted per frame).
// As libzmq 4.3.5 does, unknown, empty or multi-frame commands are ignored; a
// REP control socket gets an empty reply to every command but STATISTICS, so
// it stays usable. The proxy never waits for its controller: a STATISTICS
// reply the control socket cannot take now (its peer does not read, or it is
// a SUB) is dropped.
void proxy_steerable(socket_ref frontend, socket_ref backend, socket_ref capture,
                     socket_ref control);

// pyzmq's monitored_queue: a QUEUE that also sends every forwarded message to
// mon, as [prefix] + the frames sent to the destination. With ROUTER on both
// sides the first two frames (the two identities) are swapped, so a message
// addressed to a peer of the other side reaches it; as with any ROUTER, a
// message whose first frame names no connected peer of the other side (peers
// that set no ZMQ_ROUTING_ID cannot be named) is dropped, and mon still sees
// it. When in and out are one ROUTER, nothing is swapped: the reply goes back
// to the sender. An empty prefix is std::invalid_argument (a subscriber could
// not tell the directions apart). Prefixes are bytes, any but none: a null
// pointer (0, NULL, nullptr) does not compile.
void monitored_queue(socket_ref in, socket_ref out, socket_ref mon,
                     const std::string& in_prefix = "in", const std::string& out_prefix = "out");
void monitored_queue(socket_ref in, socket_ref out, socket_ref mon, std::nullptr_t,
                     const std::string& out_prefix = "out") = delete;
void monitored_queue(socket_ref in, socket_ref out, socket_ref mon, const std::string& in_prefix,
                     std::nullptr_t) = delete;

namespace detail {
template<class S>
inline constexpr bool is_green_socket_v = std::is_base_of_v<socket_base, std::decay_t<S>>;
}

} // namespace zmq::green

// cppzmq code calls zmq::proxy(frontend, backend[, capture]) and
// zmq::proxy_steerable(...); with these, the same calls on green sockets take
// the green path. Without them, green sockets, which convert to void* for
// zmq_pollitem_t as cppzmq's do, would reach cppzmq's deprecated void*
// overloads and block the thread in zmq_proxy.
namespace zmq {

template<class F, class B, class C = std::nullptr_t,
         typename = std::enable_if_t<green::detail::is_green_socket_v<F>
                                     && green::detail::is_green_socket_v<B>>>
void proxy(F&& frontend, B&& backend, C&& capture = nullptr)
{
    green::proxy(frontend, backend, capture);
}

template<class F, class B, class C, class K,
         typename = std::enable_if_t<green::detail::is_green_socket_v<F>
                                     && green::detail::is_green_socket_v<B>>>
void proxy_steerable(F&& frontend, B&& backend, C&& capture, K&& control)
{
    green::proxy_steerable(frontend, backend, capture, control);
}

} // namespace zmq
