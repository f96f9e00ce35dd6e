// The configuration behind the README quickstart, embedded so the CLI can use
// it without a file on disk. config/quickstart.yaml holds the same text (a test
// keeps them equal) so operators can copy it as a starting point.

export const QUICKSTART_CONFIG_YAML = `# metald quickstart: a single-host lab setup that needs no hardware
# virtualisation. VMs are sandboxed processes, the bridge, taps and nftables
# rules live in the "metald-dp" network namespace (the host's own network is
# not touched), and addresses come from a ULA prefix that never leaves the host.
# Every key is described in docs/config.md.

instance_name: metald
backend: sandbox
data_dir: ./.metald/data
listen_address: 127.0.0.1
port: 8080
max_vms: 1000

# No API tokens: fine on loopback for a lab, never for production.
auth:
  mode: none

dataplane:
  netns: metald-dp

ipv6:
  enabled: true
  default_pool:
    id: default
    prefix: fd00:6d74::/48
    description: Quickstart ULA pool
    auto_assign: true
    reserved:
      - fd00:6d74::1     # bridge gateway
      - fd00:6d74::53    # DNS server handed to guests
  bridge:
    name: br-metald
    ipv6_address: fd00:6d74::1/64
  dns:
    servers:
      - fd00:6d74::53
`;
