// Names that reach `ip`, `nft` or the filesystem are checked here first, so a
// hostile VM id or NIC id can never become an option or a path.

const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
const NETNS = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function assertIfName(name: string): string {
  if (!IFNAME.test(name) || name === '.' || name === '..') {
    throw new Error(`invalid interface name ${JSON.stringify(name)}: 1-15 chars of [A-Za-z0-9_.-], not starting with a symbol`);
  }
  return name;
}

export function assertNetnsName(name: string): string {
  if (!NETNS.test(name) || name.includes('..')) {
    throw new Error(`invalid network namespace name ${JSON.stringify(name)}: 1-63 chars of [A-Za-z0-9_.-]`);
  }
  return name;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
export function assertMac(mac: string): string {
  if (!MAC.test(mac)) throw new Error(`invalid MAC address ${JSON.stringify(mac)}`);
  return mac;
}
