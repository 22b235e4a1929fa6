// Which address a job's sockets bind and advertise, so that the ranks that must reach them can.
// One host: loopback. A job over several hosts — real ones, or nodes emulated on one machine
// with cluster.ranks_per_node, which take the multi-host path so that one machine tests it — an
// address other hosts can reach: cluster.control_interface (an interface name, or an address)
// when given, else an address of this host's name that is not loopback, else the first up,
// non-loopback IPv4 interface. The choice is a pure function of the host's facts
// (choose_reachable_address) so that tests can feed it any machine.
// Add a rule: extend choose_reachable_address and its test (tests/unit/test_host_address.cpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "comm/options.h"
#include "common/status.h"

namespace sw::comm {

struct NetInterface {
  std::string name;     // "eth0"
  std::string address;  // IPv4 dotted quad
  bool up = false;
  bool loopback = false;
};

// What the job's ranks look like from here (same on every rank).
struct JobHosts {
  int num_hosts = 1;  // real hosts (MPI_COMM_TYPE_SHARED)
  int num_nodes = 1;  // nodes, emulated ones included (cluster.ranks_per_node)
  bool spans_hosts() const { return num_hosts > 1 || num_nodes > 1; }
};

// This machine's IPv4 interfaces and the IPv4 addresses its own host name resolves to.
std::vector<NetInterface> list_interfaces();
std::string host_name();
std::vector<std::string> resolve_ipv4(const std::string& host);

// 127.0.0.0/8, ::1, "localhost" (an IPv4 literal, a name or a bracketed IPv6 literal).
bool is_loopback_host(std::string_view host);
bool is_ip_literal(std::string_view host);

// The address to bind and advertise for `wanted` (cluster.control_interface: "" for the host
// name's rule, an interface name, or an address), given the host's facts. The error names the
// key to set and what the host has.
Result<std::string> choose_reachable_address(const std::vector<NetInterface>& interfaces,
                                             const std::string& hostname,
                                             const std::vector<std::string>& hostname_addresses,
                                             const std::string& wanted);
// The same with this machine's facts.
Result<std::string> reachable_address(const std::string& wanted);

// The endpoint the coordinator binds: cluster.control_endpoint when given (refused when it is
// loopback or ipc:// and the job spans real hosts); else loopback with a free port on one host,
// and the reachable address with a free port over several.
Result<std::string> control_bind_endpoint(const CommOptions& opts, const JobHosts& hosts);
// What the workers are told to connect to: the bound endpoint (libzmq's last_endpoint), with a
// wildcard host (0.0.0.0, [::]) replaced by an address they can reach.
Result<std::string> advertised_endpoint(const std::string& bound, const CommOptions& opts,
                                        const JobHosts& hosts);
// The host a rank's KV transport binds and advertises, from disaggregation.kv_host: "auto"
// follows the rule above on this rank's host (with cluster.control_interface when it names an
// interface, since an address names one host only); "hostname" and explicit addresses are kept
// (explicit loopback is refused when the job spans real hosts).
Result<std::string> kv_bind_host(const std::string& kv_host, const CommOptions& opts,
                                 const JobHosts& hosts);

}  // namespace sw::comm
