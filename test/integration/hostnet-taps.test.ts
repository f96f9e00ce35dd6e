// DataPlaneTaps and IpSession on a real kernel: needs root. One namespace made
// here (`mtdtest-tp-<hex>`), removed in `after`.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { IpSession } from '../../src/kernel/ip-session.js';
import { linkShow, netnsAdd, netnsDelete, netnsExists } from '../../src/kernel/netns.js';
import { DataPlaneTaps, tapLines } from '../../src/network/taps.js';

const DP = `mtdtest-tp-${randomBytes(3).toString('hex')}`;
const taps = new DataPlaneTaps(DP);
const info = async (name: string) => ((await linkShow(DP, name, true))?.['linkinfo'] as Record<string, unknown> | undefined)?.['info_data'];

describe('taps for real VMMs, and the ip -batch session', { timeout: 60_000 }, () => {
  before(async () => {
    assert.ok(!(await netnsExists(DP)));
    await netnsAdd(DP);
  });
  after(async () => {
    taps.close();
    await netnsDelete(DP);
  });

  it('tapLines: single queue, vnet_hdr, owner only when given; names and owners validated', () => {
    assert.deepEqual(tapLines({ name: 'mabc', mtu: 9000, owner: { uid: 1234, gid: 99 } }),
      ['tuntap add dev mabc mode tap vnet_hdr user 1234 group 99', 'link set dev mabc mtu 9000 up']);
    assert.deepEqual(tapLines({ name: 'mabc', mtu: 1500 })[0], 'tuntap add dev mabc mode tap vnet_hdr');
    assert.throws(() => tapLines({ name: 'a b', mtu: 1500 }), /invalid interface name/);
    assert.throws(() => tapLines({ name: 'ok', mtu: 1500, owner: { uid: -1, gid: 0 } }), /invalid tap owner/);
  });

  it('ensureTap makes a persistent tap owned by the jailer uid, accepts it again, refuses a different one', async () => {
    await taps.ensureTap({ name: 'tapj1', mtu: 9000, owner: { uid: 1234, gid: 1235 } });
    await taps.ensureTap({ name: 'tapj1', mtu: 9000, owner: { uid: 1234, gid: 1235 } });
    assert.deepEqual(await info('tapj1'), { type: 'tap', pi: false, vnet_hdr: true, multi_queue: false, persist: true, user: 1234, group: 1235 });
    const link = await linkShow(DP, 'tapj1');
    assert.equal(link?.['mtu'], 9000);
    assert.ok((link?.['flags'] as string[]).includes('UP'));
    await assert.rejects(taps.ensureTap({ name: 'tapj1', mtu: 9000, owner: { uid: 1, gid: 1 } }), /busy/);
    const idx = await taps.tapIfindex('tapj1');
    await taps.removeTap('tapj1', idx! + 1000);
    assert.ok(await linkShow(DP, 'tapj1'), 'another ifindex: left alone');
    await taps.removeTap('tapj1', idx);
    assert.equal(await linkShow(DP, 'tapj1'), undefined);
    await taps.removeTap('tapj1');
  });

  it('the session reports the failing line, goes on working, and follows a namespace made again under its name', async () => {
    const s = new IpSession(DP);
    await s.run(['link add sbr type bridge']);
    await assert.rejects(s.run(['link set dev lo up', 'link add sbr type bridge']), /link add sbr type bridge: RTNETLINK answers: File exists/);
    await s.run(['link set dev sbr up']);
    await netnsDelete(DP);
    await netnsAdd(DP);
    await s.run(['link add sbr2 type bridge']);
    assert.ok(await linkShow(DP, 'sbr2'));
    assert.equal(await linkShow(DP, 'sbr'), undefined);
    s.close();
  });
});
