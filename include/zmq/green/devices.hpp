// Devices run in the background: pyzmq's Device/Proxy/ProxySteerable/
// MonitoredQueue classes, each in a fiber, a thread or a forked process.
#pragma once

#include <zmq/green/device.hpp>
#include <zmq/green/socket.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace zmq::green::devices {

// Where a device runs. caller: start() runs it in the calling fiber and
// returns when it ends; the other three return from start() once the
// device's sockets are bound and connected.
enum class run_mode { caller, fiber, thread, process };

// No port in the range could be reserved (pyzmq's ZMQBindError), or the
// address cannot be bound at all; what() names the address.
class bind_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A device failed in its worker: setup (bad endpoint, address in use, bad
// socket option) or while forwarding. num() is the errno, 0 if none.
class device_error : public std::runtime_error {
public:
    device_error(int errnum, const std::string& what) : std::runtime_error(what), errnum_(errnum) {}
    int num() const noexcept { return errnum_; }

private:
    int errnum_;
};

struct bound_endpoint {
    std::string socket;   // in, out, mon or ctrl
    std::string endpoint; // as bound, with the real port for tcp://...:*
};

// The constructors throw std::invalid_argument, naming the problem, for an
// unknown device or socket type, for socket types the device cannot use (the
// checks of device.hpp, done here instead of at start()), for an empty
// prefix and for a monitored_queue without a mon type.
//
// Configuration is recorded in the owner and replayed in the worker in
// pyzmq's order: per socket (in and out, then mon, then ctrl) the options,
// then the binds, then the connects. Each device has its own context, so an
// inproc endpoint of the owner's context cannot be reached from it.
class background_device {
public:
    virtual ~background_device();
    background_device(const background_device&) = delete;
    background_device& operator=(const background_device&) = delete;

    template<class Opt, class T, class = std::enable_if_t<!std::is_integral_v<Opt>>>
    void setsockopt_in(Opt opt, T value) { add_typed_option(role::in, opt, std::move(value)); }
    void setsockopt_in(int option, int value) { add_raw_option(role::in, option, value); }
    void setsockopt_in(int option, const std::string& value) { add_raw_option(role::in, option, value); }
    void bind_in(const std::string& addr) { add_bind(role::in, addr); }
    void connect_in(const std::string& addr) { add_connect(role::in, addr); }
    // The bind_*_to_random_port calls reserve a port of addr, "tcp://HOST", at once and
    // return it. std::invalid_argument for another transport, an addr with a port or a bad
    // range; bind_error (naming addr) if addr cannot be bound or no port is free.
    int bind_in_to_random_port(const std::string& addr, int min_port = 49152, int max_port = 65536,
                               int max_tries = 100)
    {
        return add_random_bind(role::in, addr, min_port, max_port, max_tries);
    }

    template<class Opt, class T, class = std::enable_if_t<!std::is_integral_v<Opt>>>
    void setsockopt_out(Opt opt, T value) { add_typed_option(role::out, opt, std::move(value)); }
    void setsockopt_out(int option, int value) { add_raw_option(role::out, option, value); }
    void setsockopt_out(int option, const std::string& value) { add_raw_option(role::out, option, value); }
    void bind_out(const std::string& addr) { add_bind(role::out, addr); }
    void connect_out(const std::string& addr) { add_connect(role::out, addr); }
    int bind_out_to_random_port(const std::string& addr, int min_port = 49152, int max_port = 65536,
                                int max_tries = 100)
    {
        return add_random_bind(role::out, addr, min_port, max_port, max_tries);
    }

    // Starts the device. Setup errors are thrown here as device_error; in
    // caller mode so are the device's own errors. Throws std::logic_error
    // if already started. A stop() from another fiber that ends a device
    // process before it reported its set-up makes this throw device_error
    // (ECANCELED).
    void start();
    // Waits up to timeout (-1: forever; below -1 is std::invalid_argument)
    // for the device to end: to stop forwarding, then to deliver what it
    // forwarded, within its sockets' ZMQ_LINGER (libzmq's default: until the
    // peer takes it). True if it has. The first call that sees a failed
    // device throws its device_error.
    bool join(std::chrono::milliseconds timeout = std::chrono::milliseconds{-1});
    // True once the device has stopped forwarding, even if it is still
    // delivering (never throws).
    bool done();
    // Ends the device from the owner and joins its worker. What its sockets
    // still hold is dropped; a device that ended by itself and is still
    // delivering is not waited for (a thread or fiber device goes on
    // delivering in the background, a process device exits). Errors of
    // the device are not thrown here. A no-op once the device has ended.
    void stop() noexcept;

    // The endpoints bound by the worker, known once start() has returned.
    const std::vector<bound_endpoint>& endpoints() const noexcept;
    // The forwarding counters so far (live for every run mode).
    proxy_statistics statistics() const noexcept;

    run_mode mode() const noexcept;
    int in_type() const noexcept;
    int out_type() const noexcept; // < 0: the in socket is used for both sides

protected:
    enum class role { in, out, mon, ctrl };
    using sockopt_fn = std::function<void(socket_t&)>;

    background_device(run_mode mode, int in_type, int out_type, int mon_type, int ctrl_type);

    // shown: the value as an error that names the option shows it.
    void add_sockopt(role r, int option, std::string shown, sockopt_fn fn);
    template<class Opt, class T>
    void add_typed_option(role r, Opt opt, T value)
    {
        const int number = option_number(opt);
        std::string shown;
        if constexpr (std::is_convertible_v<const T&, std::string_view>)
            shown = shown_bytes(number, value);
        else if constexpr (std::is_same_v<T, bool>)
            shown = value ? "true" : "false";
        else if constexpr (std::is_arithmetic_v<T>)
            shown = std::to_string(value);
        if constexpr (std::is_convertible_v<T, const char*>)
            add_sockopt(r, number, std::move(shown),
                        [opt, v = std::string(value)](socket_t& s) { s.set(opt, v); });
        else
            add_sockopt(r, number, std::move(shown),
                        [opt, v = std::move(value)](socket_t& s) { s.set(opt, v); });
    }
    template<int Opt, class T, bool BoolUnit>
    static constexpr int option_number(zmq::sockopt::integral_option<Opt, T, BoolUnit>)
    {
        return Opt;
    }
    template<int Opt, int NullTerm>
    static constexpr int option_number(zmq::sockopt::array_option<Opt, NullTerm>) { return Opt; }
    // libzmq reads some options as 64-bit (ZMQ_MAXMSGSIZE, ZMQ_AFFINITY):
    // their value is widened.
    void add_raw_option(role r, int option, int value);
    void add_raw_option(role r, int option, const std::string& value);
    // Quoted and escaped; keys and passwords are not shown.
    static std::string shown_bytes(int option, std::string_view value);

    void add_bind(role r, const std::string& addr);
    void add_connect(role r, const std::string& addr);
    int add_random_bind(role r, const std::string& addr, int min_port, int max_port, int max_tries);

    // What the worker runs: its sockets (empty for absent roles) and the
    // counters. start() makes it, and it owns copies of what it needs: when
    // a device is destroyed, its derived parts are gone before the base
    // stops the worker.
    using runner = std::function<void(socket_ref in, socket_ref out, socket_ref mon,
                                      socket_ref ctrl, void* counters)>;
    virtual runner make_runner() const = 0;

private:
    struct state;
    static bool work(state& st, void* ctx, const std::function<void(const std::string&)>& on_setup);
    std::unique_ptr<state> state_;
};

// Adds the monitor (capture) socket's configuration.
class with_monitor : public background_device {
public:
    template<class Opt, class T, class = std::enable_if_t<!std::is_integral_v<Opt>>>
    void setsockopt_mon(Opt opt, T value) { add_typed_option(role::mon, opt, std::move(value)); }
    void setsockopt_mon(int option, int value) { add_raw_option(role::mon, option, value); }
    void setsockopt_mon(int option, const std::string& value) { add_raw_option(role::mon, option, value); }
    void bind_mon(const std::string& addr) { add_bind(role::mon, addr); }
    void connect_mon(const std::string& addr) { add_connect(role::mon, addr); }
    int bind_mon_to_random_port(const std::string& addr, int min_port = 49152, int max_port = 65536,
                                int max_tries = 100)
    {
        return add_random_bind(role::mon, addr, min_port, max_port, max_tries);
    }
    int mon_type() const noexcept { return mon_type_; }

protected:
    with_monitor(run_mode mode, int in_type, int out_type, int mon_type, int ctrl_type)
        : background_device(mode, in_type, out_type, mon_type, ctrl_type), mon_type_(mon_type)
    {
    }

private:
    int mon_type_;
};

// Adds the control socket's configuration.
class with_control : public with_monitor {
public:
    template<class Opt, class T, class = std::enable_if_t<!std::is_integral_v<Opt>>>
    void setsockopt_ctrl(Opt opt, T value) { add_typed_option(role::ctrl, opt, std::move(value)); }
    void setsockopt_ctrl(int option, int value) { add_raw_option(role::ctrl, option, value); }
    void setsockopt_ctrl(int option, const std::string& value) { add_raw_option(role::ctrl, option, value); }
    void bind_ctrl(const std::string& addr) { add_bind(role::ctrl, addr); }
    void connect_ctrl(const std::string& addr) { add_connect(role::ctrl, addr); }
    int bind_ctrl_to_random_port(const std::string& addr, int min_port = 49152, int max_port = 65536,
                                 int max_tries = 100)
    {
        return add_random_bind(role::ctrl, addr, min_port, max_port, max_tries);
    }
    int ctrl_type() const noexcept { return ctrl_type_; }

protected:
    with_control(run_mode mode, int in_type, int out_type, int mon_type, int ctrl_type)
        : with_monitor(mode, in_type, out_type, mon_type, ctrl_type), ctrl_type_(ctrl_type)
    {
    }

private:
    int ctrl_type_;
};

// zmq::green::device(type, in, out). out_type < 0: one socket serves both sides.
class device_base : public background_device {
public:
    int device_type() const noexcept { return type_; }

protected:
    device_base(run_mode mode, int type, int in_type, int out_type);
    runner make_runner() const override;

private:
    int type_;
};

// zmq::green::proxy(in, out, mon).
class proxy_base : public with_monitor {
protected:
    proxy_base(run_mode mode, int in_type, int out_type, int mon_type);
    runner make_runner() const override;
};

// zmq::green::proxy_steerable(in, out, mon, ctrl).
class proxy_steerable_base : public with_control {
protected:
    proxy_steerable_base(run_mode mode, int in_type, int out_type, int mon_type, int ctrl_type);
    runner make_runner() const override;
};

// zmq::green::monitored_queue(in, out, mon, in_prefix, out_prefix).
class monitored_queue_base : public with_monitor {
public:
    const std::string& in_prefix() const noexcept { return in_prefix_; }
    const std::string& out_prefix() const noexcept { return out_prefix_; }

protected:
    monitored_queue_base(run_mode mode, int in_type, int out_type, int mon_type,
                         std::string in_prefix, std::string out_prefix);
    runner make_runner() const override;

private:
    std::string in_prefix_;
    std::string out_prefix_;
};

template<run_mode Mode>
class basic_device : public device_base {
public:
    basic_device(int type, int in_type, int out_type) : device_base(Mode, type, in_type, out_type) {}
    basic_device(zmq::green::device_type type, int in_type, int out_type)
        : device_base(Mode, static_cast<int>(type), in_type, out_type)
    {
    }
};

template<run_mode Mode>
class basic_proxy : public proxy_base {
public:
    basic_proxy(int in_type, int out_type, int mon_type = ZMQ_PUB)
        : proxy_base(Mode, in_type, out_type, mon_type)
    {
    }
};

// pyzmq requires a control type; PAIR is the usual one and the default here.
template<run_mode Mode>
class basic_proxy_steerable : public proxy_steerable_base {
public:
    basic_proxy_steerable(int in_type, int out_type, int mon_type = ZMQ_PUB, int ctrl_type = ZMQ_PAIR)
        : proxy_steerable_base(Mode, in_type, out_type, mon_type, ctrl_type)
    {
    }
};

template<run_mode Mode>
class basic_monitored_queue : public monitored_queue_base {
public:
    basic_monitored_queue(int in_type, int out_type, int mon_type = ZMQ_PUB,
                          std::string in_prefix = "in", std::string out_prefix = "out")
        : monitored_queue_base(Mode, in_type, out_type, mon_type, std::move(in_prefix),
                               std::move(out_prefix))
    {
    }
    // A null pointer is not a prefix (it would throw from std::string).
    basic_monitored_queue(int, int, int, std::nullptr_t, std::string = "out") = delete;
    basic_monitored_queue(int, int, int, std::string, std::nullptr_t) = delete;
};

using device = basic_device<run_mode::caller>;
using fiber_device = basic_device<run_mode::fiber>;
using thread_device = basic_device<run_mode::thread>;
using process_device = basic_device<run_mode::process>;

using proxy = basic_proxy<run_mode::caller>;
using fiber_proxy = basic_proxy<run_mode::fiber>;
using thread_proxy = basic_proxy<run_mode::thread>;
using process_proxy = basic_proxy<run_mode::process>;

using proxy_steerable = basic_proxy_steerable<run_mode::caller>;
using fiber_proxy_steerable = basic_proxy_steerable<run_mode::fiber>;
using thread_proxy_steerable = basic_proxy_steerable<run_mode::thread>;
using process_proxy_steerable = basic_proxy_steerable<run_mode::process>;

using monitored_queue = basic_monitored_queue<run_mode::caller>;
using fiber_monitored_queue = basic_monitored_queue<run_mode::fiber>;
using thread_monitored_queue = basic_monitored_queue<run_mode::thread>;
using process_monitored_queue = basic_monitored_queue<run_mode::process>;

} // namespace zmq::green::devices
