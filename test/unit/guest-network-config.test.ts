import assert from 'node:assert/strict';
import { it } from 'node:test';
import { guestKernelArgs, guestNetworkDocument, resolvConf } from '../../src/core/guest/network-config.js';
import type { VmRecord } from '../../src/core/vm/record.js';

const vm: VmRecord = {
  id: 'vm-1', tenantId: 'acme', state: 'created', isolated: false, isolationReason: '', isolatedAt: null,
  config: { network: [{ id: 'eth0', ipv6: { enable_privacy_extensions: true } }, { id: 'eth1' }] },
  backend: 'sandbox', backendState: {}, failureReason: '',
  nics: [
    { id: 'eth0', hostDevice: 'mabc00000000001', mac: '02:00:00:00:00:01', bridge: 'br-prod', vlanId: 100, ipv6Address: '2600:beef:1000:100::10/64', ipv6Gateway: '2600:beef:1000:100::1', ipv6Allocation: '2600:beef:1000:100::/64' },
    { id: 'eth1', hostDevice: 'mabc00000000002', mac: '02:00:00:00:00:02', bridge: 'br-prod', vlanId: 100, ipv6Address: '2600:beef:1000::3/64', ipv6Gateway: '2600:beef:1000::1', ipv6Allocation: '2600:beef:1000::3/128' },
  ],
  createdAt: '2026-11-26T00:00:00.000Z', updatedAt: '2026-11-26T00:00:00.000Z', revision: 2,
};
const dns = { servers: ['2001:4860:4860::8888', '2606:4700:4700::1111'], searchDomain: 'vm.prod.company.com', dnssec: true, dnsOverTls: true };

it('the MMDS-shaped document carries address, gateway, DNS and privacy settings per NIC', () => {
  const doc = guestNetworkDocument(vm, dns);
  assert.deepEqual(doc, {
    latest: {
      'meta-data': {
        'instance-id': 'vm-1',
        'tenant-id': 'acme',
        network: {
          interfaces: [
            { 'interface-id': 'eth0', mac: '02:00:00:00:00:01', 'device-number': 0, ipv6: '2600:beef:1000:100::10/64', 'ipv6-gateway': '2600:beef:1000:100::1', 'privacy-extensions': true, slaac: true },
            { 'interface-id': 'eth1', mac: '02:00:00:00:00:02', 'device-number': 1, ipv6: '2600:beef:1000::3/64', 'ipv6-gateway': '2600:beef:1000::1', 'privacy-extensions': false, slaac: false },
          ],
        },
        dns: { servers: dns.servers, search: ['vm.prod.company.com'], dnssec: true, 'dns-over-tls': true },
      },
    },
  });
});

it('kernel arguments and resolv.conf come from the same document', () => {
  const doc = guestNetworkDocument(vm, dns);
  assert.deepEqual(guestKernelArgs(doc), [
    'metald.ip6=2600:beef:1000:100::10/64', 'metald.gw6=2600:beef:1000:100::1',
    'metald.dns=2001:4860:4860::8888,2606:4700:4700::1111', 'metald.search=vm.prod.company.com',
  ]);
  assert.equal(resolvConf(doc), [
    "# written by metald from the VM's network metadata",
    'nameserver 2001:4860:4860::8888', 'nameserver 2606:4700:4700::1111',
    'search vm.prod.company.com', 'options edns0 trust-ad rotate', '',
  ].join('\n'));
});
