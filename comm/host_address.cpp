// Reachable addresses for the control endpoint and the KV transports.
#include "comm/host_address.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace sw::comm {
namespace {

std::string describe(const std::vector<NetInterface>& interfaces) {
  std::vector<std::string> out;
  for (const NetInterface& i : interfaces)
    out.push_back(fmt::format("{} {}{}", i.name, i.address, i.up ? "" : " (down)"));
  return out.empty() ? "none" : fmt::format("{}", fmt::join(out, ", "));
}

// The host of "tcp://HOST:PORT" (after a "source;" prefix, brackets kept), or "" when the
// endpoint is not tcp://.
std::string tcp_host(std::string_view endpoint) {
  if (endpoint.rfind("tcp://", 0) != 0) return "";
  std::string_view rest = endpoint.substr(6);
  if (auto semi = rest.find(';'); semi != std::string_view::npos) rest = rest.substr(semi + 1);
  const auto colon = rest.rfind(':');
  return std::string(colon == std::string_view::npos ? rest : rest.substr(0, colon));
}

bool is_wildcard_host(std::string_view host) {
  return host == "*" || host == "0.0.0.0" || host == "[::]" || host == "::";
}

}  // namespace

std::vector<NetInterface> list_interfaces() {
  std::vector<NetInterface> out;
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) return out;
  for (ifaddrs* i = all; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {0};
    const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    if (!inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text))) continue;
    out.push_back({i->ifa_name ? i->ifa_name : "", text, (i->ifa_flags & IFF_UP) != 0,
                   (i->ifa_flags & IFF_LOOPBACK) != 0});
  }
  freeifaddrs(all);
  return out;
}

std::string host_name() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

std::vector<std::string> resolve_ipv4(const std::string& host) {
  std::vector<std::string> out;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (host.empty() || getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return out;
  for (addrinfo* a = res; a; a = a->ai_next) {
    char text[INET_ADDRSTRLEN] = {0};
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) &&
        std::find(out.begin(), out.end(), text) == out.end())
      out.push_back(text);
  }
  freeaddrinfo(res);
  return out;
}

bool is_ip_literal(std::string_view host) {
  std::string h(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr a{};
  const std::string h(host);
  return inet_pton(AF_INET, h.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

Result<std::string> choose_reachable_address(const std::vector<NetInterface>& interfaces,
                                             const std::string& hostname,
                                             const std::vector<std::string>& hostname_addresses,
                                             const std::string& wanted) {
  if (!wanted.empty()) {
    if (is_ip_literal(wanted)) return wanted;
    for (const NetInterface& i : interfaces) {
      if (i.name != wanted) continue;
      if (!i.up)
        return unavailable("cluster.control_interface: interface '{}' of host '{}' is down", wanted,
                           hostname);
      return i.address;
    }
    return not_found(
        "cluster.control_interface: host '{}' has no interface '{}' with an IPv4 address (it "
        "has: {}); give an interface name or an address",
        hostname, wanted, describe(interfaces));
  }
  for (const std::string& a : hostname_addresses)
    if (!is_loopback_host(a)) return a;
  for (const NetInterface& i : interfaces)
    if (i.up && !i.loopback && !is_loopback_host(i.address)) return i.address;
  return unavailable(
      "the job spans hosts, but host '{}' has no address other hosts can reach (its name "
      "resolves to [{}]; interfaces: {}); set cluster.control_interface to an interface or "
      "address, or cluster.control_endpoint",
      hostname, fmt::join(hostname_addresses, ", "), describe(interfaces));
}

Result<std::string> reachable_address(const std::string& wanted) {
  const std::string name = host_name();
  return choose_reachable_address(list_interfaces(), name, resolve_ipv4(name), wanted);
}

Result<std::string> control_bind_endpoint(const CommOptions& o, const JobHosts& hosts) {
  if (!o.control_endpoint.empty()) {
    if (hosts.num_hosts > 1) {
      const std::string host = tcp_host(o.control_endpoint);
      if (o.control_endpoint.rfind("tcp://", 0) != 0 || is_loopback_host(host))
        return invalid_argument(
            "cluster.control_endpoint: '{}' cannot be reached from other hosts, but the job "
            "spans {} hosts; leave it unset (an address of rank 0's host is chosen), or give "
            "tcp://<address>:<port> or cluster.control_interface",
            o.control_endpoint, hosts.num_hosts);
    }
    return o.control_endpoint;
  }
  if (!hosts.spans_hosts() && o.control_interface.empty())
    return std::string(kLoopbackControlEndpoint);
  SW_ASSIGN_OR_RETURN(std::string address, reachable_address(o.control_interface));
  if (address.find(':') != std::string::npos && address.front() != '[')
    address = "[" + address + "]";
  return "tcp://" + address + ":*";
}

Result<std::string> advertised_endpoint(const std::string& bound, const CommOptions& o,
                                        const JobHosts& hosts) {
  const std::string host = tcp_host(bound);
  if (!is_wildcard_host(host)) return bound;
  std::string address = "127.0.0.1";
  if (hosts.spans_hosts() || !o.control_interface.empty()) {
    SW_ASSIGN_OR_RETURN(address, reachable_address(o.control_interface));
  }
  if (address.find(':') != std::string::npos && address.front() != '[')
    address = "[" + address + "]";
  return "tcp://" + address + bound.substr(bound.rfind(':'));
}

Result<std::string> kv_bind_host(const std::string& kv_host, const CommOptions& o,
                                 const JobHosts& hosts) {
  if (kv_host == "auto") {
    if (!hosts.spans_hosts()) return std::string("127.0.0.1");
    // An address names one host; an interface name means the same interface on every host.
    const std::string wanted = is_ip_literal(o.control_interface) ? "" : o.control_interface;
    auto address = reachable_address(wanted);
    if (!address.ok())
      return address.status().with_context(
          "disaggregation.kv_host auto (set it, or cluster.control_interface)");
    return address;
  }
  if (hosts.num_hosts > 1 && is_loopback_host(kv_host))
    return invalid_argument(
        "disaggregation.kv_host: '{}' cannot be reached from other hosts, but the job spans {} "
        "hosts; use auto (the default), hostname or an address",
        kv_host, hosts.num_hosts);
  return kv_host;
}

}  // namespace sw::comm
