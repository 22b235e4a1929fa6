// The multi-host address rule (comm/host_address.h) on made-up machines: one host binds
// loopback with a free port; a job over several hosts (real or emulated nodes) binds an address
// the others can reach — the named interface or address, else the host name's address, else
// the first up non-loopback interface (Debian maps the host name to 127.0.1.1); explicit
// loopback or ipc:// endpoints are refused when the job spans real hosts; wildcard binds are
// advertised with a reachable address; the KV transports follow the same rule.
#include <gtest/gtest.h>

#include "comm/host_address.h"

namespace sw::comm {
namespace {

const std::vector<NetInterface> kMachine = {{"lo", "127.0.0.1", true, true},
                                            {"docker0", "172.17.0.1", false, false},
                                            {"eth0", "10.1.2.3", true, false},
                                            {"ib0", "192.168.7.9", true, false}};

TEST(HostAddress, LiteralsAndLoopback) {
  EXPECT_TRUE(is_ip_literal("10.0.0.1"));
  EXPECT_TRUE(is_ip_literal("::1"));
  EXPECT_TRUE(is_ip_literal("[fe80::1]"));
  EXPECT_FALSE(is_ip_literal("eth0"));
  EXPECT_FALSE(is_ip_literal("node-1"));
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.0.1.1"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_TRUE(is_loopback_host("[::1]"));
  EXPECT_FALSE(is_loopback_host("10.1.2.3"));
  EXPECT_FALSE(is_loopback_host("*"));
}

TEST(HostAddress, TheHostNamesAddressWinsUnlessItIsLoopback) {
  EXPECT_EQ(*choose_reachable_address(kMachine, "node1", {"192.168.7.9"}, ""), "192.168.7.9");
  // Debian's /etc/hosts: the host name is 127.0.1.1, so the first up, non-loopback interface.
  EXPECT_EQ(*choose_reachable_address(kMachine, "node1", {"127.0.1.1"}, ""), "10.1.2.3");
  EXPECT_EQ(*choose_reachable_address(kMachine, "node1", {}, ""), "10.1.2.3");
}

TEST(HostAddress, AnInterfaceOrAddressCanBeNamed) {
  EXPECT_EQ(*choose_reachable_address(kMachine, "node1", {"10.1.2.3"}, "ib0"), "192.168.7.9");
  EXPECT_EQ(*choose_reachable_address(kMachine, "node1", {}, "10.9.9.9"), "10.9.9.9");
  auto down = choose_reachable_address(kMachine, "node1", {}, "docker0");
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().message(),
            "cluster.control_interface: interface 'docker0' of host 'node1' is down");
  auto missing = choose_reachable_address(kMachine, "node1", {}, "eth7");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(),
            "cluster.control_interface: host 'node1' has no interface 'eth7' with an IPv4 "
            "address (it has: lo 127.0.0.1, docker0 172.17.0.1 (down), eth0 10.1.2.3, ib0 "
            "192.168.7.9); give an interface name or an address");
}

TEST(HostAddress, AHostWithOnlyLoopbackIsAClearError) {
  auto none =
      choose_reachable_address({{"lo", "127.0.0.1", true, true}}, "island", {"127.0.1.1"}, "");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().message(),
            "the job spans hosts, but host 'island' has no address other hosts can reach (its "
            "name resolves to [127.0.1.1]; interfaces: lo 127.0.0.1); set "
            "cluster.control_interface to an interface or address, or cluster.control_endpoint");
}

TEST(HostAddress, ControlEndpointOnOneHostIsLoopbackWithAFreePort) {
  CommOptions o;
  EXPECT_EQ(*control_bind_endpoint(o, JobHosts{1, 1}), "tcp://127.0.0.1:*");
  o.control_endpoint = "ipc:///tmp/x";
  EXPECT_EQ(*control_bind_endpoint(o, JobHosts{1, 1}), "ipc:///tmp/x");
}

// Emulated nodes take the multi-host path on this machine: whatever address this machine
// offers other hosts (its host name's, or an interface's) is bound, never loopback.
TEST(HostAddress, ControlEndpointOverSeveralNodesIsReachable) {
  CommOptions o;
  auto ep = control_bind_endpoint(o, JobHosts{1, 3});
  auto here = reachable_address("");
  if (!here.ok()) GTEST_SKIP() << "this machine has only loopback: " << here.status().message();
  ASSERT_TRUE(ep.ok()) << ep.status().message();
  EXPECT_EQ(*ep, "tcp://" + *here + ":*");
  o.control_interface = "10.20.30.40";
  EXPECT_EQ(*control_bind_endpoint(o, JobHosts{2, 2}), "tcp://10.20.30.40:*");
  o.control_interface = "";
  o.control_endpoint = "tcp://10.20.30.40:5570";
  EXPECT_EQ(*control_bind_endpoint(o, JobHosts{2, 2}), "tcp://10.20.30.40:5570");
}

TEST(HostAddress, LoopbackOrIpcEndpointsAreRefusedOverRealHosts) {
  CommOptions o;
  for (const char* ep : {"tcp://127.0.0.1:5570", "tcp://localhost:*", "ipc:///tmp/sw"}) {
    o.control_endpoint = ep;
    auto r = control_bind_endpoint(o, JobHosts{3, 3});
    ASSERT_FALSE(r.ok()) << ep;
    EXPECT_EQ(r.status().message(),
              fmt::format("cluster.control_endpoint: '{}' cannot be reached from other hosts, but "
                          "the job spans 3 hosts; leave it unset (an address of rank 0's host is "
                          "chosen), or give tcp://<address>:<port> or cluster.control_interface",
                          ep));
    // Emulated nodes on one machine may keep loopback (the tests do).
    EXPECT_TRUE(control_bind_endpoint(o, JobHosts{1, 3}).ok()) << ep;
  }
}

TEST(HostAddress, WildcardBindsAreAdvertisedWithAReachableAddress) {
  CommOptions o;
  EXPECT_EQ(*advertised_endpoint("tcp://127.0.0.1:4000", o, JobHosts{1, 1}),
            "tcp://127.0.0.1:4000");
  EXPECT_EQ(*advertised_endpoint("tcp://0.0.0.0:4000", o, JobHosts{1, 1}), "tcp://127.0.0.1:4000");
  o.control_interface = "10.20.30.40";
  EXPECT_EQ(*advertised_endpoint("tcp://0.0.0.0:4000", o, JobHosts{2, 2}),
            "tcp://10.20.30.40:4000");
  EXPECT_EQ(*advertised_endpoint("ipc:///tmp/x", o, JobHosts{1, 1}), "ipc:///tmp/x");
}

TEST(HostAddress, KvHostFollowsTheSameRule) {
  CommOptions o;
  EXPECT_EQ(*kv_bind_host("auto", o, JobHosts{1, 1}), "127.0.0.1");
  EXPECT_EQ(*kv_bind_host("hostname", o, JobHosts{4, 4}), "hostname");
  EXPECT_EQ(*kv_bind_host("10.0.0.5", o, JobHosts{4, 4}), "10.0.0.5");
  EXPECT_EQ(*kv_bind_host("127.0.0.1", o, JobHosts{1, 4}), "127.0.0.1");
  auto loop = kv_bind_host("127.0.0.1", o, JobHosts{4, 4});
  ASSERT_FALSE(loop.ok());
  EXPECT_NE(loop.status().message().find("disaggregation.kv_host: '127.0.0.1' cannot be reached"),
            std::string::npos);
  // An address names rank 0's host only: each KV host uses its own host name's address then.
  o.control_interface = "10.20.30.40";
  auto here = reachable_address("");
  if (here.ok()) {
    EXPECT_EQ(*kv_bind_host("auto", o, JobHosts{1, 2}), *here);
  }
  // An interface name means the same interface on every host.
  o.control_interface = "no-such-interface-here";
  auto named = kv_bind_host("auto", o, JobHosts{1, 2});
  ASSERT_FALSE(named.ok());
  EXPECT_NE(named.status().message().find("disaggregation.kv_host auto"), std::string::npos);
}

}  // namespace
}  // namespace sw::comm
