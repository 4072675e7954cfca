#include <zmq/green/context.hpp>
#include <zmq/green/devices.hpp>
#include <zmq/green/hub.hpp>
#include <zmq/green/task.hpp>
#include <zmq/green/timeout.hpp>

#include "device_loop.hpp"
#include "reactor.hpp"

#include <boost/fiber/fiber.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace zmq::green::devices {

namespace {

using namespace std::chrono_literals;

constexpr int role_count = 4;
const char* const role_names[role_count] = {"in", "out", "mon", "ctrl"};

bool valid_socket_type(int type) { return type >= ZMQ_PAIR && type <= ZMQ_STREAM; }

void check_type(int type, const char* role)
{
    if (!valid_socket_type(type))
        throw std::invalid_argument(std::string("zmq::green::devices: invalid ") + role
                                    + " socket type " + std::to_string(type));
}

// The worker would refuse these types too, but only after start(): say it
// where the types are chosen.
void check_roles(const char* device, bool back_to_front, int in_type, int out_type, int mon_type,
                 int ctrl_type)
{
    detail::device_sockets d;
    d.device = device;
    d.names = detail::background_role_names;
    d.back_to_front = back_to_front;
    d.front = in_type;
    d.back = out_type < 0 ? -1 : out_type;
    d.capture = mon_type;
    d.control = ctrl_type;
    const auto problem = detail::device_sockets_problem(d);
    if (!problem.empty())
        throw std::invalid_argument(problem);
}

// Worker reports travel as text lines, the same for a thread and a process:
//   setup: "ep ROLE ENDPOINT" per bound endpoint, then "ok" or "err ERRNO MESSAGE"
//   end:   "done" or "err ERRNO MESSAGE"
// An ipc path may hold a newline, which would end its line early: ENDPOINT
// goes escaped ("\\" and "\n").
std::string escaped(const std::string& text)
{
    std::string out;
    for (const char ch : text) {
        if (ch == '\\' || ch == '\n')
            out += '\\';
        out += ch == '\n' ? 'n' : ch;
    }
    return out;
}

std::string unescaped(const std::string& text)
{
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size()) {
            ++i;
            out += text[i] == 'n' ? '\n' : text[i];
        } else {
            out += text[i];
        }
    }
    return out;
}

std::string error_line(int errnum, const std::string& message)
{
    std::string clean = message;
    for (auto& ch : clean)
        if (ch == '\n')
            ch = ' ';
    return "err " + std::to_string(errnum) + " " + clean + "\n";
}

[[noreturn]] void throw_error_line(const std::string& line)
{
    std::istringstream in(line.substr(4));
    int errnum = 0;
    in >> errnum;
    std::string message;
    std::getline(in >> std::ws, message);
    throw device_error(errnum, message);
}

// libzmq's socket options that take 64 bits.
bool is_64_bit(int option)
{
    return option == ZMQ_AFFINITY || option == ZMQ_MAXMSGSIZE || option == ZMQ_VMCI_BUFFER_SIZE
           || option == ZMQ_VMCI_BUFFER_MIN_SIZE || option == ZMQ_VMCI_BUFFER_MAX_SIZE;
}

// "ZMQ_SNDHWM (23)", or the number alone for an option libzmq 4.3 has not.
std::string option_name(int option)
{
#define ZG_OPTION(name) {name, #name}
    static const std::map<int, const char*> names = {
        ZG_OPTION(ZMQ_AFFINITY), ZG_OPTION(ZMQ_ROUTING_ID), ZG_OPTION(ZMQ_SUBSCRIBE),
        ZG_OPTION(ZMQ_UNSUBSCRIBE), ZG_OPTION(ZMQ_RATE), ZG_OPTION(ZMQ_RECOVERY_IVL),
        ZG_OPTION(ZMQ_SNDBUF), ZG_OPTION(ZMQ_RCVBUF), ZG_OPTION(ZMQ_LINGER),
        ZG_OPTION(ZMQ_RECONNECT_IVL), ZG_OPTION(ZMQ_BACKLOG), ZG_OPTION(ZMQ_RECONNECT_IVL_MAX),
        ZG_OPTION(ZMQ_MAXMSGSIZE), ZG_OPTION(ZMQ_SNDHWM), ZG_OPTION(ZMQ_RCVHWM),
        ZG_OPTION(ZMQ_MULTICAST_HOPS), ZG_OPTION(ZMQ_RCVTIMEO), ZG_OPTION(ZMQ_SNDTIMEO),
        ZG_OPTION(ZMQ_ROUTER_MANDATORY), ZG_OPTION(ZMQ_TCP_KEEPALIVE),
        ZG_OPTION(ZMQ_TCP_KEEPALIVE_CNT), ZG_OPTION(ZMQ_TCP_KEEPALIVE_IDLE),
        ZG_OPTION(ZMQ_TCP_KEEPALIVE_INTVL), ZG_OPTION(ZMQ_IMMEDIATE), ZG_OPTION(ZMQ_XPUB_VERBOSE),
        ZG_OPTION(ZMQ_ROUTER_RAW), ZG_OPTION(ZMQ_PLAIN_SERVER), ZG_OPTION(ZMQ_PLAIN_USERNAME),
        ZG_OPTION(ZMQ_PLAIN_PASSWORD), ZG_OPTION(ZMQ_CURVE_SERVER), ZG_OPTION(ZMQ_CURVE_PUBLICKEY),
        ZG_OPTION(ZMQ_CURVE_SECRETKEY), ZG_OPTION(ZMQ_CURVE_SERVERKEY), ZG_OPTION(ZMQ_PROBE_ROUTER),
        ZG_OPTION(ZMQ_REQ_CORRELATE), ZG_OPTION(ZMQ_REQ_RELAXED), ZG_OPTION(ZMQ_CONFLATE),
        ZG_OPTION(ZMQ_ZAP_DOMAIN), ZG_OPTION(ZMQ_ROUTER_HANDOVER), ZG_OPTION(ZMQ_TOS),
        ZG_OPTION(ZMQ_CONNECT_ROUTING_ID), ZG_OPTION(ZMQ_GSSAPI_SERVER),
        ZG_OPTION(ZMQ_GSSAPI_PRINCIPAL), ZG_OPTION(ZMQ_GSSAPI_SERVICE_PRINCIPAL),
        ZG_OPTION(ZMQ_GSSAPI_PLAINTEXT), ZG_OPTION(ZMQ_HANDSHAKE_IVL), ZG_OPTION(ZMQ_SOCKS_PROXY),
        ZG_OPTION(ZMQ_XPUB_NODROP), ZG_OPTION(ZMQ_XPUB_MANUAL), ZG_OPTION(ZMQ_XPUB_WELCOME_MSG),
        ZG_OPTION(ZMQ_STREAM_NOTIFY), ZG_OPTION(ZMQ_INVERT_MATCHING), ZG_OPTION(ZMQ_HEARTBEAT_IVL),
        ZG_OPTION(ZMQ_HEARTBEAT_TTL), ZG_OPTION(ZMQ_HEARTBEAT_TIMEOUT),
        ZG_OPTION(ZMQ_XPUB_VERBOSER), ZG_OPTION(ZMQ_CONNECT_TIMEOUT), ZG_OPTION(ZMQ_TCP_MAXRT),
        ZG_OPTION(ZMQ_MULTICAST_MAXTPDU), ZG_OPTION(ZMQ_VMCI_BUFFER_SIZE),
        ZG_OPTION(ZMQ_VMCI_BUFFER_MIN_SIZE), ZG_OPTION(ZMQ_VMCI_BUFFER_MAX_SIZE),
        ZG_OPTION(ZMQ_VMCI_CONNECT_TIMEOUT), ZG_OPTION(ZMQ_USE_FD),
        ZG_OPTION(ZMQ_GSSAPI_PRINCIPAL_NAMETYPE), ZG_OPTION(ZMQ_GSSAPI_SERVICE_PRINCIPAL_NAMETYPE),
        ZG_OPTION(ZMQ_BINDTODEVICE), ZG_OPTION(ZMQ_TCP_ACCEPT_FILTER),
        ZG_OPTION(ZMQ_IPC_FILTER_PID), ZG_OPTION(ZMQ_IPC_FILTER_UID), ZG_OPTION(ZMQ_IPC_FILTER_GID),
    };
#undef ZG_OPTION
    const auto it = names.find(option);
    return it == names.end() ? std::to_string(option)
                             : std::string(it->second) + " (" + std::to_string(option) + ")";
}

bool is_error(const std::string& line) { return line.rfind("err ", 0) == 0; }

void write_all(int fd, const std::string& text) noexcept
{
    const char* p = text.data();
    size_t left = text.size();
    while (left > 0) {
        const ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
}

// Closes the fds in [from, to] (from at least 3).
void close_fds(int from, int to) noexcept
{
    from = std::max(from, 3);
    if (from > to || ::close_range(static_cast<unsigned>(from), static_cast<unsigned>(to), 0) == 0)
        return;
    const int open_max = static_cast<int>(std::min<long>(::sysconf(_SC_OPEN_MAX), INT_MAX));
    for (int fd = from; fd <= std::min(to, open_max - 1); ++fd)
        ::close(fd);
}

// A forked child keeps every fd of its parent, O_CLOEXEC or not (there is
// no exec): another device's stop pipe, whose child then never sees it
// close, and the owner's listening sockets, whose ports stay bound.
void close_fds_but(int a, int b) noexcept
{
    const auto [low, high] = std::minmax(a, b);
    close_fds(3, low - 1);
    close_fds(low + 1, high - 1);
    close_fds(high + 1, INT_MAX);
}

// An eventfd that stays readable once signalled.
struct event_fd {
    int fd;

    event_fd() : fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))
    {
        if (fd < 0)
            throw std::system_error(errno, std::generic_category(), "eventfd");
    }
    ~event_fd() { ::close(fd); }
    event_fd(const event_fd&) = delete;
    event_fd& operator=(const event_fd&) = delete;

    void signal() const noexcept
    {
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto rc = ::write(fd, &one, sizeof one);
    }
};

// A green wait for fd to be readable, until deadline; false if it passed.
// Uninterruptible waits (stop()) ignore kills and scoped timeouts.
bool readable(int fd, detail::clock::time_point deadline, bool interruptible)
{
    return hub::current().reactor()->wait_fd(fd, ZMQ_POLLIN, deadline, interruptible);
}

// A line a worker hands to its owner, who waits for it in a green wait.
// Not a boost::fibers::promise across threads: a worker thread that sets it
// while the owner's wait holds the promise's fiber mutex parks on that mutex,
// the owner's unlock wakes it from the owner's thread, and Boost 1.74 calls
// the worker's hub (notify) only after releasing its queue, by when the
// worker may have run on, ended and destroyed that hub: a use after free. A
// std::mutex never parks a fiber, and an eventfd write reaches the owner's
// epoll whatever becomes of the worker.
class handoff {
public:
    void set(std::string line)
    {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (line_)
                return; // the first line stands
            line_ = std::move(line);
        }
        ready_.signal();
    }
    // Waits up to timeout (-1: no limit); true once set. Interruptible as
    // other green waits (a kill, a scoped timeout) unless told otherwise.
    // Once true, what the worker wrote before set() is visible: is_set()
    // takes the mutex after the eventfd said so.
    bool wait(std::chrono::milliseconds timeout, bool interruptible = true)
    {
        return is_set()
               || (readable(ready_.fd, detail::deadline_after(timeout), interruptible)
                   && is_set());
    }
    std::string get()
    {
        wait(std::chrono::milliseconds{-1});
        std::lock_guard<std::mutex> lock(mutex_);
        return *line_;
    }

private:
    bool is_set()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return line_.has_value();
    }

    event_fd ready_;
    std::mutex mutex_;
    std::optional<std::string> line_;
};

// Terminating a context waits for its sockets' ZMQ_LINGER, forever for a
// message whose peer never comes. A thread of its own waits for it, so that
// join() can time out and stop() can detach it: the thread owns all it uses.
std::thread start_terminator(context_t ctx, std::shared_ptr<event_fd> done)
{
    try {
        return std::thread([ctx = std::move(ctx), done]() mutable {
            ctx.close();
            done->signal();
        });
    } catch (const std::system_error&) {
        done->signal(); // the context closed with the thread's function, here
        return {};
    }
}

// What is left until a deadline from detail::deadline_after, as the timeout
// of a wait: -1 for none, and never less than 0, nor short of the deadline.
std::chrono::milliseconds time_left(detail::clock::time_point deadline)
{
    if (deadline == detail::no_deadline)
        return std::chrono::milliseconds{-1};
    const auto left = deadline - detail::clock::now();
    return std::max(0ms, std::chrono::ceil<std::chrono::milliseconds>(left));
}

int port_of(const std::string& endpoint)
{
    return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

} // namespace

struct background_device::state {
    run_mode mode;
    std::array<int, role_count> types;
    struct option {
        int number;
        std::string shown;
        sockopt_fn set;
    };
    std::array<std::vector<option>, role_count> options;
    std::array<std::vector<std::string>, role_count> binds;
    std::array<std::vector<std::string>, role_count> connects;
    std::set<int> reserved_ports;
    runner run; // made by start()

    // Shared memory, so that a device process's counters are visible too.
    detail::device_counters* counters = nullptr;

    bool started = false;
    bool finished = false;
    std::string end_report; // the worker's end line, thrown once by join if an error
    bool end_reported = false;
    std::vector<bound_endpoint> endpoints;

    // caller, fiber and thread modes
    std::unique_ptr<context_t> ctx;
    std::unique_ptr<event_fd> stop_event;    // the owner asks the worker to stop
    bool dropped = false;                    // the worker closed its sockets without linger
    std::shared_ptr<event_fd> terminated;    // the worker's context has terminated
    std::thread terminator;                  // the thread that terminates it
    handoff setup_line;
    handoff end_line;
    std::thread thread;
    boost::fibers::fiber fiber;

    // process mode
    pid_t pid = -1;
    int status_fd = -1;
    int stop_fd = -1;
    std::string buffer;
    bool eof = false;
    bool end_read = false;
    // While start() reads the set-up, the report and the reaping of the
    // child are its own: a join(), done() or stop() of another fiber waits
    // for setup_over (stop() ends the child first).
    bool setting_up = false;
    bool stopped_in_setup = false;
    std::unique_ptr<event_fd> setup_over;

    state(run_mode m, std::array<int, role_count> t) : mode(m), types(t)
    {
        void* mem = ::mmap(nullptr, sizeof(detail::device_counters), PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            throw std::system_error(errno, std::generic_category(), "mmap device counters");
        counters = new (mem) detail::device_counters();
    }
    ~state()
    {
        counters->~device_counters();
        ::munmap(counters, sizeof(detail::device_counters));
        if (status_fd >= 0)
            ::close(status_fd);
        if (stop_fd >= 0)
            ::close(stop_fd);
    }

    void parse_setup(const std::string& report)
    {
        std::istringstream in(report);
        std::string line;
        while (std::getline(in, line)) {
            if (is_error(line))
                throw_error_line(line);
            if (line.rfind("ep ", 0) == 0) {
                const auto space = line.find(' ', 3);
                endpoints.push_back(
                    {line.substr(3, space - 3), unescaped(line.substr(space + 1))});
            }
        }
    }

    enum class read_result { line, eof, timeout };

    read_result read_line(std::string& line, std::chrono::milliseconds timeout,
                          bool interruptible = true)
    {
        const auto deadline = detail::deadline_after(timeout);
        for (;;) {
            const auto nl = buffer.find('\n');
            if (nl != std::string::npos) {
                line = buffer.substr(0, nl);
                buffer.erase(0, nl + 1);
                return read_result::line;
            }
            if (eof)
                return read_result::eof;
            if (!readable(status_fd, deadline, interruptible))
                return read_result::timeout;
            char chunk[512];
            const ssize_t n = ::read(status_fd, chunk, sizeof chunk);
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0)
                eof = true;
            else
                buffer.append(chunk, static_cast<size_t>(n));
        }
    }

    // Waits up to timeout for the worker's end line (or the end of its
    // process). True once the device has stopped forwarding.
    bool forwarding_ended(std::chrono::milliseconds timeout, bool interruptible = true)
    {
        if (finished)
            return true;
        if (mode != run_mode::process)
            return end_line.wait(timeout, interruptible);
        const auto deadline = detail::deadline_after(timeout);
        if (setting_up && !readable(setup_over->fd, deadline, interruptible))
            return false;
        if (finished) // start() met the end of the child
            return true;
        std::string line;
        while (!end_read) {
            const auto got = read_line(line, time_left(deadline), interruptible);
            if (got == read_result::timeout)
                return false;
            if (got == read_result::eof)
                return true;
            end_read = true;
            end_report = line;
        }
        return true;
    }

    // Waits up to timeout for the device to end: it has stopped forwarding
    // and delivered what it forwarded (its context has terminated, its
    // process has exited). True if so. Uninterruptible for stop(), which
    // must not leave a worker unjoined or a child unreaped.
    bool wait_end(std::chrono::milliseconds timeout, bool interruptible = true)
    {
        if (finished)
            return true;
        const auto deadline = detail::deadline_after(timeout);
        if (!forwarding_ended(time_left(deadline), interruptible))
            return false;
        if (finished)
            return true;
        if (mode == run_mode::process) {
            std::string line;
            for (;;) {
                const auto got = read_line(line, time_left(deadline), interruptible);
                if (got == read_result::timeout)
                    return false;
                if (got == read_result::eof)
                    break;
            }
            if (finished) // another fiber's wait met the same end and reaped the child
                return true;
            finished = true;
            const auto status = reap_child();
            if (!end_read)
                end_report = error_line(0, "device process ended without a report (status " + status
                                               + ")");
            return true;
        }
        if (!readable(terminated->fd, deadline, interruptible))
            return false;
        if (finished) // another fiber completed the wait meanwhile
            return true;
        finished = true;
        end_report = end_line.get();
        if (terminator.joinable())
            terminator.join();
        if (thread.joinable())
            thread.join();
        if (fiber.joinable())
            fiber.join();
        return true;
    }

    std::string reap_child()
    {
        // waitpid(-1) would take, or wait for, another child of the owner.
        if (pid <= 0)
            throw std::logic_error("zmq::green::devices: the device process was already reaped");
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        pid = -1;
        return std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
};

background_device::background_device(run_mode mode, int in_type, int out_type, int mon_type,
                                     int ctrl_type)
{
    check_type(in_type, "in");
    if (out_type >= 0)
        check_type(out_type, "out");
    if (mon_type != -1)
        check_type(mon_type, "mon");
    if (ctrl_type != -1)
        check_type(ctrl_type, "ctrl");
    state_ = std::make_unique<state>(mode, std::array<int, role_count>{in_type, out_type, mon_type,
                                                                        ctrl_type});
}

background_device::~background_device() { stop(); }

void background_device::add_raw_option(role r, int option, int value)
{
    add_sockopt(r, option, std::to_string(value), [option, value](socket_t& s) {
        const std::int64_t wide = value;
        const int rc = is_64_bit(option) ? zmq_setsockopt(s.handle(), option, &wide, sizeof wide)
                                         : zmq_setsockopt(s.handle(), option, &value, sizeof value);
        if (rc != 0)
            throw zmq::error_t();
    });
}

void background_device::add_raw_option(role r, int option, const std::string& value)
{
    add_sockopt(r, option, shown_bytes(option, value), [option, value](socket_t& s) {
        if (zmq_setsockopt(s.handle(), option, value.data(), value.size()) != 0)
            throw zmq::error_t();
    });
}

std::string background_device::shown_bytes(int option, std::string_view value)
{
    if (option == ZMQ_CURVE_SECRETKEY || option == ZMQ_PLAIN_PASSWORD)
        return std::to_string(value.size()) + " bytes, not shown";
    std::string text = "\"";
    for (const char ch : value) {
        const auto byte = static_cast<unsigned char>(ch);
        if (ch == '"' || ch == '\\') {
            text += '\\';
            text += ch;
        } else if (byte >= 0x20 && byte < 0x7f) {
            text += ch;
        } else {
            const char hex[] = "0123456789abcdef";
            text += "\\x";
            text += hex[byte >> 4];
            text += hex[byte & 0xf];
        }
    }
    return text + "\"";
}

namespace {
void check_not_started(bool started)
{
    if (started)
        throw std::logic_error("zmq::green::devices: configure a device before start()");
}
} // namespace

void background_device::add_sockopt(role r, int option, std::string shown, sockopt_fn fn)
{
    check_not_started(state_->started);
    state_->options[static_cast<size_t>(r)].push_back({option, std::move(shown), std::move(fn)});
}

void background_device::add_bind(role r, const std::string& addr)
{
    check_not_started(state_->started);
    state_->binds[static_cast<size_t>(r)].push_back(addr);
}

void background_device::add_connect(role r, const std::string& addr)
{
    check_not_started(state_->started);
    state_->connects[static_cast<size_t>(r)].push_back(addr);
}

// The port is chosen here, in the owner, by binding a probe socket, as pyzmq
// does: the owner needs the number before the worker exists. Another process
// can take it before the worker binds; the worker then fails with
// EADDRINUSE and start() throws, so the returned port is never silently wrong.
int background_device::add_random_bind(role r, const std::string& addr, int min_port,
                                       int max_port, int max_tries)
{
    check_not_started(state_->started);
    if (min_port < 1 || max_port > 65536 || min_port >= max_port || max_tries <= 0)
        throw std::invalid_argument("zmq::green::devices: bad random port range ["
                                    + std::to_string(min_port) + ", " + std::to_string(max_port)
                                    + ") or max_tries " + std::to_string(max_tries));
    // The port goes after the last ':': only tcp has one. (An ipc path
    // would take ":*" literally and leave no port to report.) A ':' after an
    // IPv6 host's ']' already starts a port, which libzmq would read as the
    // host's and fail to bind with ENODEV.
    const auto host_end = addr.rfind(']');
    if (addr.rfind("tcp://", 0) != 0
        || addr.find(':', host_end == std::string::npos ? 6 : host_end) != std::string::npos)
        throw std::invalid_argument("zmq::green::devices: bind to a random port needs a tcp:// "
                                    "address without a port, got '" + addr + "'");
    zmq::context_t probe_ctx;
    const bool defaults = min_port == 49152 && max_port == 65536 && max_tries == 100;
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(min_port, max_port - 1);
    const int tries = defaults ? 5 : max_tries;
    for (int i = 0; i < tries; ++i) {
        zmq::socket_t probe(probe_ctx, zmq::socket_type::push);
        probe.set(zmq::sockopt::linger, 0);
        int port = 0;
        try {
            if (defaults) {
                probe.bind(addr + ":*");
                port = port_of(probe.get(zmq::sockopt::last_endpoint));
            } else {
                port = pick(rng);
                if (state_->reserved_ports.count(port))
                    continue;
                probe.bind(addr + ":" + std::to_string(port));
            }
        } catch (const zmq::error_t& e) {
            if (e.num() == EADDRINUSE || e.num() == EACCES)
                continue;
            // libzmq's errno alone can puzzle ("No such device" for an
            // address that already has a port): say which address.
            throw bind_error("zmq::green::devices: cannot bind '" + addr
                             + "' to a random port: " + e.what());
        }
        if (state_->reserved_ports.count(port))
            continue;
        state_->reserved_ports.insert(port);
        state_->binds[static_cast<size_t>(r)].push_back(addr + ":" + std::to_string(port));
        return port;
    }
    throw bind_error("zmq::green::devices: could not reserve a random port for " + addr);
}

// Creates and configures the sockets, reports the setup through on_setup,
// then runs the device. Returns false if setup failed (already reported).
bool background_device::work(state& st, void* ctx_ptr,
                             const std::function<void(const std::string&)>& on_setup)
{
    auto& ctx = *static_cast<context_t*>(ctx_ptr);
    std::array<socket_t, role_count> sockets;
    auto target = [&](size_t r) -> socket_t& {
        return r == 1 && st.types[1] < 0 ? sockets[0] : sockets[r];
    };
    std::string report;
    std::string doing;
    try {
        for (size_t r = 0; r < role_count; ++r)
            if (st.types[r] >= 0) {
                doing = std::string("create ") + role_names[r] + " socket";
                sockets[r] = socket_t(ctx, st.types[r]);
            }
        // pyzmq's order: options first (ZMQ_IDENTITY must precede connects),
        // in and out together, then mon, then ctrl.
        const std::vector<std::vector<size_t>> groups = {{0, 1}, {2}, {3}};
        for (const auto& group : groups) {
            for (size_t r : group)
                for (const auto& opt : st.options[r]) {
                    doing = "set option " + option_name(opt.number) + " to " + opt.shown + " on "
                            + role_names[r];
                    opt.set(target(r));
                }
            for (size_t r : group)
                for (const auto& addr : st.binds[r]) {
                    doing = std::string("bind ") + role_names[r] + " " + addr;
                    target(r).bind(addr);
                    report += std::string("ep ") + role_names[r] + " "
                              + escaped(target(r).get(zmq::sockopt::last_endpoint)) + "\n";
                }
            for (size_t r : group)
                for (const auto& addr : st.connects[r]) {
                    doing = std::string("connect ") + role_names[r] + " " + addr;
                    target(r).connect(addr);
                }
        }
    } catch (const zmq::error_t& e) {
        on_setup(error_line(e.num(), doing + ": " + e.what()));
        return false;
    } catch (const std::exception& e) {
        on_setup(error_line(0, doing + ": " + e.what()));
        return false;
    }
    on_setup(report + "ok\n");
    if (!st.stop_event) { // a process: its main thread ends it
        st.run(sockets[0], target(1), sockets[2], sockets[3], st.counters);
        return true;
    }
    // stop() drops what the sockets still hold: with libzmq's default
    // infinite linger, a peer that never comes would keep the context from
    // terminating. A socket takes no option once it has seen ETERM, so the
    // linger goes first.
    bool ended = false;
    boost::fibers::fiber watcher([&] {
        wait_readable(st.stop_event->fd);
        if (ended)
            return;
        try {
            for (auto& s : sockets)
                if (s.handle() != nullptr)
                    s.set(zmq::sockopt::linger, 0);
            st.dropped = true;
        } catch (const zmq::error_t&) {
        }
        ctx.shutdown();
    });
    const auto end_watch = [&] {
        ended = true;
        st.stop_event->signal();
        watcher.join();
    };
    try {
        st.run(sockets[0], target(1), sockets[2], sockets[3], st.counters);
    } catch (...) {
        end_watch();
        throw;
    }
    end_watch();
    return true;
}

namespace {

template<class Work>
std::string end_line_of(Work&& work)
{
    try {
        work();
        return "done";
    } catch (const zmq::error_t& e) {
        return error_line(e.num(), std::string("device failed: ") + e.what());
    } catch (const timeout_error&) {
        throw; // a scoped timeout of the fiber that runs a caller-mode device
    } catch (const std::exception& e) {
        return error_line(0, std::string("device failed: ") + e.what());
    } catch (const fiber_cancelled&) {
        throw; // a kill of the fiber that runs a caller-mode device
    } catch (...) {
        return error_line(0, "device failed: an exception that is not a std::exception");
    }
}

} // namespace

void background_device::start()
{
    auto& st = *state_;
    if (st.started)
        throw std::logic_error("zmq::green::devices: device already started");
    st.run = make_runner();
    hub::current(); // the owner's waits below park its fiber, not its thread

    if (st.mode == run_mode::process) {
        st.setup_over = std::make_unique<event_fd>();
        int status[2];
        int stop[2];
        if (::pipe2(status, O_CLOEXEC) != 0)
            throw std::system_error(errno, std::generic_category(), "pipe");
        if (::pipe2(stop, O_CLOEXEC) != 0) {
            const int err = errno;
            ::close(status[0]);
            ::close(status[1]);
            throw std::system_error(err, std::generic_category(), "pipe");
        }
        const pid_t pid = ::fork();
        if (pid < 0) {
            const int err = errno;
            for (int fd : {status[0], status[1], stop[0], stop[1]})
                ::close(fd);
            throw std::system_error(err, std::generic_category(), "fork");
        }
        if (pid == 0) {
            // The child: only this thread survived the fork, and the parent's
            // hub and contexts belong to the parent. A new thread gets a
            // fresh hub; the device gets a fresh context.
            close_fds_but(status[1], stop[0]);
            // The owner may block signals to read them from a signalfd
            // (zmq-green-device does): its device must still die of SIGTERM.
            sigset_t none;
            sigemptyset(&none);
            ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
            // Nor run the owner's handlers, written for the owner's state: as
            // across an exec, a caught signal goes back to its default, and an
            // ignored one stays ignored.
            for (int sig = 1; sig < NSIG; ++sig) {
                struct sigaction action {};
                if (::sigaction(sig, nullptr, &action) == 0 && action.sa_handler != SIG_DFL
                    && action.sa_handler != SIG_IGN) {
                    action = {};
                    action.sa_handler = SIG_DFL;
                    ::sigaction(sig, &action, nullptr);
                }
            }
            const int report_fd = status[1];
            const int stop_fd = stop[0];
            std::thread([&st, report_fd] {
                context_t ctx;
                const auto end = end_line_of([&] {
                    work(st, &ctx, [report_fd](const std::string& s) { write_all(report_fd, s); });
                });
                write_all(report_fd, is_error(end) ? end : end + "\n");
                // Delivers what the device forwarded, within each socket's
                // ZMQ_LINGER, unless the owner stops it or dies first.
                ctx.close();
                ::_exit(0);
            }).detach();
            // The owner closes its end of the stop pipe to stop the device,
            // and so does its death: the process ends at once, dropping what
            // its sockets still hold. (No green wait: this thread's hub is
            // the parent's.)
            char byte;
            while (::read(stop_fd, &byte, 1) < 0 && errno == EINTR) {
            }
            ::_exit(0);
        }
        ::close(status[1]);
        ::close(stop[0]);
        st.pid = pid;
        st.status_fd = status[0];
        st.stop_fd = stop[1];
        st.started = true; // once there is a child for stop() to end
        st.setting_up = true;
        struct setup_end {
            state& st;
            ~setup_end()
            {
                st.setting_up = false;
                st.setup_over->signal();
            }
        } end_of_setup{st};
        std::string line;
        for (;;) {
            state::read_result got;
            try {
                got = st.read_line(line, std::chrono::milliseconds{-1});
            } catch (...) {
                // A kill or scoped timeout of this fiber: the child runs on.
                st.setting_up = false;
                this->stop();
                throw;
            }
            if (got == state::read_result::eof) {
                st.finished = true;
                st.end_reported = true;
                const auto exit_status = st.reap_child();
                if (st.stopped_in_setup)
                    throw device_error(ECANCELED, "device stopped during setup by stop()");
                throw device_error(0, "device process exited during setup (status "
                                          + exit_status + ")");
            }
            if (is_error(line)) {
                st.finished = true;
                st.end_reported = true;
                if (st.stop_fd >= 0) { // the child exits at once
                    ::close(st.stop_fd);
                    st.stop_fd = -1;
                }
                st.reap_child();
                throw_error_line(line);
            }
            if (line == "ok")
                return;
            st.parse_setup(line);
        }
    }

    st.ctx = std::make_unique<context_t>();
    st.stop_event = std::make_unique<event_fd>();
    st.terminated = std::make_shared<event_fd>();
    // The worker uses the state only: the device's derived parts may be
    // destroyed while it runs.
    auto body = [&s = st] {
        std::string end;
        std::exception_ptr interrupted; // of the caller's fiber: not the device's error
        try {
            end = end_line_of([&] {
                work(s, s.ctx.get(),
                     [&s](const std::string& report) { s.setup_line.set(report); });
            });
        } catch (...) {
            interrupted = std::current_exception();
            end = "done";
        }
        s.terminator = start_terminator(std::move(*s.ctx), s.terminated);
        s.end_line.set(end);
        if (interrupted)
            std::rethrow_exception(interrupted);
    };
    // From here stop() has a worker to stop, whatever start() meets.
    st.started = true;
    try {
        if (st.mode == run_mode::thread)
            st.thread = std::thread(body);
        else if (st.mode == run_mode::fiber)
            st.fiber = boost::fibers::fiber(body);
    } catch (...) {
        st.started = false; // no worker
        throw;
    }
    if (st.mode == run_mode::caller)
        body();
    std::string setup;
    try {
        setup = st.setup_line.get();
    } catch (...) {
        // A kill or scoped timeout of this fiber: the worker runs on.
        stop();
        throw;
    }
    try {
        st.parse_setup(setup);
    } catch (...) {
        // The worker is ending: its context's end releases what it bound.
        join();
        throw;
    }
    if (st.mode == run_mode::caller)
        join();
}

bool background_device::join(std::chrono::milliseconds timeout)
{
    detail::check_wait_timeout(timeout, "background_device::join");
    auto& st = *state_;
    if (!st.started)
        return true;
    if (!st.wait_end(timeout))
        return false;
    if (!st.end_reported) {
        st.end_reported = true;
        if (is_error(st.end_report))
            throw_error_line(st.end_report);
    }
    return true;
}

bool background_device::done()
{
    auto& st = *state_;
    return st.started && st.forwarding_ended(0ms); // join() throws what it recorded
}

void background_device::stop() noexcept
{
    auto& st = *state_;
    if (!st.started || st.finished)
        return;
    st.end_reported = true; // stop() is the owner's decision: no error to report
    try {
        if (st.mode == run_mode::process) {
            if (st.stop_fd >= 0) {
                ::close(st.stop_fd);
                st.stop_fd = -1;
            }
            st.stopped_in_setup = st.setting_up;
        } else {
            st.stop_event->signal();
            // Uninterruptible: stop() is noexcept, and must not leave the
            // worker running unjoined.
            st.end_line.wait(std::chrono::milliseconds{-1}, false);
            // A worker that ended by itself may still be delivering what it
            // forwarded, for as long as its sockets' linger: not waited for.
            if (!st.dropped) {
                if (st.terminator.joinable())
                    st.terminator.detach();
                st.terminated->signal();
            }
        }
        st.wait_end(std::chrono::milliseconds{-1}, false);
    } catch (...) {
    }
}

const std::vector<bound_endpoint>& background_device::endpoints() const noexcept
{
    return state_->endpoints;
}

proxy_statistics background_device::statistics() const noexcept
{
    return state_->counters->snapshot();
}

run_mode background_device::mode() const noexcept { return state_->mode; }
int background_device::in_type() const noexcept { return state_->types[0]; }
int background_device::out_type() const noexcept { return state_->types[1]; }

// --- the devices --------------------------------------------------------------

device_base::device_base(run_mode mode, int type, int in_type, int out_type)
    : background_device(mode, in_type, out_type, -1, -1), type_(type)
{
    if (type != ZMQ_QUEUE && type != ZMQ_FORWARDER && type != ZMQ_STREAMER)
        throw std::invalid_argument("zmq::green::devices: invalid device type "
                                    + std::to_string(type));
    check_roles(type == ZMQ_QUEUE       ? "devices::device(queue)"
                : type == ZMQ_FORWARDER ? "devices::device(forwarder)"
                                        : "devices::device(streamer)",
                type == ZMQ_QUEUE, in_type, out_type, -1, -1);
}

background_device::runner device_base::make_runner() const
{
    return [type = type_](socket_ref in, socket_ref out, socket_ref, socket_ref, void* counters) {
        // device()'s own: one place says which way each type forwards.
        auto opts = detail::device_options(type);
        opts.counters = static_cast<detail::device_counters*>(counters);
        detail::run_device_loop(in, out, opts);
    };
}

proxy_base::proxy_base(run_mode mode, int in_type, int out_type, int mon_type)
    : with_monitor(mode, in_type, out_type, mon_type, -1)
{
    check_roles("devices::proxy", true, in_type, out_type, mon_type, -1);
}

background_device::runner proxy_base::make_runner() const
{
    return [](socket_ref in, socket_ref out, socket_ref mon, socket_ref, void* counters) {
        detail::device_loop_options opts;
        opts.capture = mon;
        opts.counters = static_cast<detail::device_counters*>(counters);
        detail::run_device_loop(in, out, opts);
    };
}

proxy_steerable_base::proxy_steerable_base(run_mode mode, int in_type, int out_type, int mon_type,
                                           int ctrl_type)
    : with_control(mode, in_type, out_type, mon_type, ctrl_type)
{
    check_roles("devices::proxy_steerable", true, in_type, out_type, mon_type, ctrl_type);
}

background_device::runner proxy_steerable_base::make_runner() const
{
    return [](socket_ref in, socket_ref out, socket_ref mon, socket_ref ctrl, void* counters) {
        detail::device_loop_options opts;
        opts.capture = mon;
        opts.control = ctrl;
        opts.counters = static_cast<detail::device_counters*>(counters);
        detail::run_device_loop(in, out, opts);
    };
}

monitored_queue_base::monitored_queue_base(run_mode mode, int in_type, int out_type, int mon_type,
                                           std::string in_prefix, std::string out_prefix)
    : with_monitor(mode, in_type, out_type, mon_type, -1), in_prefix_(std::move(in_prefix)),
      out_prefix_(std::move(out_prefix))
{
    detail::check_prefixes("devices::monitored_queue", in_prefix_, out_prefix_);
    if (mon_type < 0)
        throw std::invalid_argument("zmq::green::devices::monitored_queue: the mon socket type "
                                    "is required");
    check_roles("devices::monitored_queue", true, in_type, out_type, mon_type, -1);
}

background_device::runner monitored_queue_base::make_runner() const
{
    return [in_prefix = in_prefix_, out_prefix = out_prefix_](socket_ref in, socket_ref out,
                                                             socket_ref mon, socket_ref,
                                                             void* counters) {
        auto opts = detail::monitored_queue_options(in, out, mon, in_prefix, out_prefix);
        opts.counters = static_cast<detail::device_counters*>(counters);
        detail::run_device_loop(in, out, opts);
    };
}

} // namespace zmq::green::devices
