// zmq-green: ZeroMQ sockets whose blocking calls park a Boost.Fiber.
#pragma once

#define ZMQ_GREEN_VERSION_MAJOR 0
#define ZMQ_GREEN_VERSION_MINOR 1
#define ZMQ_GREEN_VERSION_PATCH 0

#include <zmq/green/context.hpp>
#include <zmq/green/device.hpp>
#include <zmq/green/devices.hpp>
#include <zmq/green/event.hpp>
#include <zmq/green/hub.hpp>
#include <zmq/green/io_loop.hpp>
#include <zmq/green/monitor.hpp>
#include <zmq/green/multipart.hpp>
#include <zmq/green/poll.hpp>
#include <zmq/green/socket.hpp>
#include <zmq/green/stack_pool.hpp>
#include <zmq/green/task.hpp>
#include <zmq/green/timeout.hpp>
#include <zmq/green/zmq_stream.hpp>
