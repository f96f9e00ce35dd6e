import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  baseConfig, cleanupEnv, cli, type Env, leftovers, newEnv, startDaemon, TOKENS, writeConfig,
} from '../helpers/daemon-harness.js';

// `metald pool list|get|allocations|allocate|release` against a running daemon.

describe('metald pool CLI', { timeout: 120_000 }, async () => {
  const env: Env = await newEnv();
  const pool = (args: string[], token: string | null = TOKENS.admin) => cli(env, ['pool', ...args], token);
  const json = (r: { code: number | null; stdout: string; stderr: string }) => {
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };

  before(async () => {
    writeConfig(env, baseConfig(env, {
      ipv6: {
        default_pool: { id: 'lab', prefix: 'fd00:77::/48', reserved: ['fd00:77::53'] },
        pools: [{ id: 'infra', prefix: 'fd00:78::/64', auto_assign: false }],
      },
    }));
    await startDaemon(env);
  });

  after(async () => {
    await cleanupEnv(env);
    assert.deepEqual(await leftovers(env), [], 'namespaces or processes left behind');
  });

  it('lists pools as a table and as JSON', async () => {
    const table = await pool(['list']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^POOL\s+PREFIX\s+MODE/m);
    assert.match(table.stdout, /^lab\s+fd00:77::\/48\s+address\s+yes/m);
    const j = json(await pool(['list', '-o', 'json']));
    assert.deepEqual(j.pools.map((p: { id: string }) => p.id), ['lab', 'infra']);
    assert.equal(j.pools[0].size, (2n ** 80n).toString());
  });

  it('allocates by hand from a manual pool, lists, releases into quarantine', async () => {
    const a = json(await pool(['allocate', 'infra', '--owner', 'dns-resolver', '-o', 'json']));
    assert.equal(a.pool_id, 'infra');
    assert.equal(a.owner, 'dns-resolver');
    assert.equal(a.address, 'fd00:78::2', 'lowest free, skipping ::0 and the ::1 gateway');
    const s = json(await pool(['allocate', 'infra', '--owner', 'ntp', '--address', 'fd00:78::123', '-o', 'json']));
    assert.equal(s.prefix, 'fd00:78::123/128');
    const list = json(await pool(['allocations', '--pool', 'infra', '-o', 'json']));
    assert.deepEqual(list.allocations.map((x: { address: string }) => x.address).sort(), ['fd00:78::123', 'fd00:78::2']);
    const g = json(await pool(['get', 'infra', '-o', 'json']));
    assert.equal(g.used, '2');
    const rel = await pool(['release', 'fd00:78::123']);
    assert.equal(rel.code, 0, rel.stderr);
    assert.match(rel.stdout, /released; quarantined until \d{4}-/);
    const q = json(await pool(['allocations', '--pool', 'infra', '--quarantined', '-o', 'json']));
    assert.ok(q.allocations.some((x: { address: string; released_at?: string }) => x.address === 'fd00:78::123' && x.released_at));
  });

  it('exit codes: tenants may not allocate (5), unknown pool (3), taken address (4), bad address (2)', async () => {
    assert.equal((await pool(['allocate', 'infra', '--owner', 'x'], TOKENS.a)).code, 5);
    assert.equal((await pool(['get', 'nope'])).code, 3);
    assert.equal((await pool(['allocate', 'infra', '--owner', 'x', '--address', 'fd00:78::2'])).code, 4);
    assert.equal((await pool(['allocate', 'infra', '--owner', 'x', '--address', 'fd00:78::zz'])).code, 2);
    assert.equal((await pool(['allocate', 'lab', '--owner', 'x', '--address', 'fd00:77::53'])).code, 4, 'reserved');
  });
});
