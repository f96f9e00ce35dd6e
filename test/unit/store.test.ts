import { after, afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { VM_STATES, type VmRecord, type VmStateName } from '../../src/core/vm/record.js';
import type { Mutation, Store, VmQuery } from '../../src/store/store.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { StoreConflictError } from '../../src/store/store.js';
import { DataDirLockedError, SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { migrate, SchemaTooNewError, type Migration } from '../../src/store/sqlite/migrations.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SQLITE_MODULE = pathToFileURL(path.join(REPO, 'src/store/sqlite/sqlite-store.ts')).href;

const tmpRoots: string[] = [];
after(() => tmpRoots.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** A data dir that doesn't exist yet, so open() has to create it. */
function freshDataDir(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'metald-store-'));
  tmpRoots.push(root);
  return path.join(root, 'data');
}

function vm(id: string, over: Partial<VmRecord> = {}): VmRecord {
  return {
    id,
    tenantId: 't1',
    state: 'creating',
    isolated: false,
    isolationReason: '',
    isolatedAt: null,
    config: { cpu: { vcpu_count: 1 }, labels: { id } },
    backend: 'firecracker',
    backendState: {},
    failureReason: '',
    nics: [],
    createdAt: '2024-01-01T00:00:00.000Z',
    updatedAt: '2024-01-01T00:00:00.000Z',
    revision: 1,
    ...over,
  };
}

const put = (v: VmRecord): Mutation => ({ op: 'putVm', vm: v });
const ids = (vms: readonly VmRecord[]) => vms.map((v) => v.id);

interface Harness {
  store: Store;
  dispose(): Promise<void>;
}

const memoryHarness = (): Harness => {
  const store = new MemoryStore();
  return { store, dispose: () => store.close() };
};
const sqliteHarness = (): Harness => {
  const store = SqliteStore.open(freshDataDir());
  return { store, dispose: () => store.close() };
};

/** Behaviour every Store must share; run against each implementation. */
function storeContract(name: string, factory: () => Harness | Promise<Harness>): void {
  describe(`${name} contract`, () => {
    let h: Harness;
    let store: Store;
    beforeEach(async () => {
      h = await factory();
      store = h.store;
    });
    afterEach(() => h.dispose());

    it('puts and gets a record, without aliasing', async () => {
      assert.equal(await store.getVm('a'), undefined);
      const a = vm('a', { nics: [{ id: 'eth0', hostDevice: 'tap0', mac: '02:00:00:00:00:01',
        bridge: 'br0', vlanId: 12, ipv6Address: 'fd00::2/64', ipv6Gateway: 'fd00::1', ipv6Allocation: 'fd00::2/128' }] });
      await store.commit([put(a)]);
      const got = await store.getVm('a');
      assert.deepEqual(got, a);
      // Returned records are read-only: a store may hand out frozen shared objects.
      assert.throws(() => { got!.state = 'failed'; }, TypeError);
      a.state = 'failed';
      assert.equal((await store.getVm('a'))!.state, 'creating');
    });

    it('updates when the revision follows the stored one', async () => {
      await store.commit([put(vm('a'))]);
      await store.commit([put(vm('a', { state: 'running', revision: 2 }))]);
      await store.commit([put(vm('a', { state: 'paused', revision: 3 }))]);
      const got = await store.getVm('a');
      assert.equal(got!.state, 'paused');
      assert.equal(got!.revision, 3);
    });

    it('rejects stale, skipped and duplicate-create revisions', async () => {
      await store.commit([put(vm('a')), put(vm('a', { revision: 2 }))]);
      for (const bad of [vm('a'), vm('a', { revision: 2 }), vm('a', { revision: 4 }),
        vm('missing', { revision: 2 })]) {
        await assert.rejects(store.commit([put(bad)]), StoreConflictError);
      }
      await store.commit([put(vm('a', { revision: 3 }))]);
      await assert.rejects(store.commit([put(vm('a', { revision: 3 }))]), (err: unknown) =>
        err instanceof StoreConflictError && err.id === 'a' && err.expectedRevision === 2 &&
        err.actualRevision === 3);
      await assert.rejects(store.commit([put(vm('z', { revision: 0 }))]), RangeError);
      assert.equal((await store.getVm('a'))!.revision, 3);
    });

    it('rolls back the whole commit on conflict', async () => {
      await store.commit([put(vm('a')), put(vm('c'))]);
      // The good mutations sit on both sides of the failing one.
      const commit = [put(vm('b')), { op: 'deleteVm', id: 'c' } as const,
        put(vm('a', { revision: 5 })), put(vm('d'))];
      await assert.rejects(store.commit(commit), StoreConflictError);
      assert.equal(await store.getVm('b'), undefined);
      assert.equal(await store.getVm('d'), undefined);
      assert.ok(await store.getVm('c'));
      assert.equal((await store.getVm('a'))!.revision, 1);
      assert.equal(await store.countVms(), 2);
    });

    it('deletes, and deleting a missing id is a no-op', async () => {
      await store.commit([put(vm('a')), put(vm('b'))]);
      await store.commit([{ op: 'deleteVm', id: 'a' }, { op: 'deleteVm', id: 'nope' }]);
      assert.equal(await store.getVm('a'), undefined);
      assert.equal(await store.countVms(), 1);
      // After a delete the id starts over at revision 1.
      await store.commit([put(vm('a'))]);
      assert.equal(await store.countVms(), 2);
    });

    it('lists by id ascending with keyset pages and a stable total', async () => {
      const all = Array.from({ length: 25 }, (_, i) => `vm-${String(i).padStart(2, '0')}`);
      await store.commit(fc.sample(fc.shuffledSubarray(all, { minLength: 25 }), 1)[0]!
        .map((id) => put(vm(id))));
      const seen: string[] = [];
      let afterId: string | undefined;
      for (const size of [10, 10, 5, 0]) {
        const page = await store.listVms({ limit: 10, afterId });
        assert.equal(page.vms.length, size);
        assert.equal(page.total, 25);
        seen.push(...ids(page.vms));
        afterId = page.vms.at(-1)?.id ?? afterId;
      }
      assert.deepEqual(seen, all);
      assert.deepEqual(ids((await store.listVms({})).vms), all);
      const none = await store.listVms({ limit: 0 });
      assert.deepEqual(none, { vms: [], total: 25 });
      await assert.rejects(store.listVms({ limit: -1 }), RangeError);
    });

    it('filters by tenant and states; total ignores paging', async () => {
      const states: VmStateName[] = ['running', 'paused', 'failed'];
      await store.commit(Array.from({ length: 30 }, (_, i) =>
        put(vm(`v${String(i).padStart(2, '0')}`, { tenantId: `t${i % 2}`, state: states[i % 3]! }))));
      const q = async (query: VmQuery) => {
        const p = await store.listVms(query);
        return { ids: ids(p.vms), total: p.total };
      };
      assert.deepEqual(await q({ tenantId: 't0', limit: 2 }), { ids: ['v00', 'v02'], total: 15 });
      assert.deepEqual(await q({ states: ['paused'], afterId: 'v01', limit: 2 }),
        { ids: ['v04', 'v07'], total: 10 });
      assert.deepEqual(await q({ tenantId: 't1', states: ['running', 'failed'], afterId: 'v05' }),
        { ids: ['v09', 'v11', 'v15', 'v17', 'v21', 'v23', 'v27', 'v29'], total: 10 });
      assert.deepEqual(await q({ tenantId: 'nobody' }), { ids: [], total: 0 });
      assert.deepEqual(await q({ states: ['deleting'] }), { ids: [], total: 0 });
      // An empty states list means "no filter", like an unset repeated field.
      assert.equal((await q({ states: [] })).total, 30);
      assert.equal(await store.countVms(), 30);
    });

    it('accepts an empty commit', async () => {
      await store.commit([]);
      assert.equal(await store.countVms(), 0);
    });
  });
}

storeContract('MemoryStore', memoryHarness);
storeContract('SqliteStore', sqliteHarness);

describe('MemoryStore and SqliteStore agree on random histories', () => {
  const op = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('put' as const), id: fc.integer({ min: 0, max: 5 }),
      tenant: fc.integer({ min: 0, max: 2 }), state: fc.constantFrom(...VM_STATES),
      skew: fc.constantFrom(0, 0, 0, -1, 1) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('del' as const), id: fc.integer({ min: 0, max: 5 }) }) },
  );
  it('same outcomes, pages and totals', async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.array(op, { maxLength: 4 }), { maxLength: 12 }),
      fc.constantFrom(...VM_STATES), async (commits, probe) => {
        const mem = memoryHarness();
        const sql = sqliteHarness();
        try {
          for (const ops of commits) {
            const muts: Mutation[] = [];
            for (const o of ops) {
              const id = `vm-${o.id}`;
              if (o.kind === 'del') { muts.push({ op: 'deleteVm', id }); continue; }
              const revision = ((await mem.store.getVm(id))?.revision ?? 0) + 1 + o.skew;
              muts.push(put(vm(id, { tenantId: `t${o.tenant}`, state: o.state, revision })));
            }
            const outcome = async (s: Store) => s.commit(muts).then(() => 'ok', (e: Error) => e.name);
            assert.equal(await outcome(sql.store), await outcome(mem.store));
          }
          for (const query of [{}, { tenantId: 't1' }, { states: [probe, 'running' as const] },
            { tenantId: 't0', afterId: 'vm-2', limit: 2 }]) {
            assert.deepEqual(await sql.store.listVms(query), await mem.store.listVms(query));
          }
          assert.equal(await sql.store.countVms(), await mem.store.countVms());
        } finally {
          await mem.dispose();
          await sql.dispose();
        }
      }), { numRuns: 60 });
  });
});

describe('SqliteStore specifics', () => {
  it('keeps data across close and reopen', async () => {
    const dir = freshDataDir();
    const s1 = SqliteStore.open(dir);
    await s1.commit([put(vm('a')), put(vm('b', { tenantId: 't2' }))]);
    await s1.commit([put(vm('a', { state: 'running', revision: 2 }))]);
    await s1.close();
    const s2 = SqliteStore.open(dir);
    try {
      assert.deepEqual(await s2.getVm('a'), vm('a', { state: 'running', revision: 2 }));
      assert.equal((await s2.listVms({ tenantId: 't2' })).total, 1);
    } finally {
      await s2.close();
    }
  });

  it('sets durability pragmas and private directories', async () => {
    const dir = freshDataDir();
    const s = SqliteStore.open(dir);
    try {
      assert.equal(s.pragma('journal_mode'), 'wal');
      assert.equal(s.pragma('synchronous'), 2); // FULL
      assert.equal(s.pragma('foreign_keys'), 1);
      assert.equal(s.pragma('busy_timeout'), 5000);
      for (const d of [dir, path.join(dir, 'wal'), path.join(dir, 'pools')]) {
        const st = fs.statSync(d);
        assert.ok(st.isDirectory(), d);
        assert.equal(st.mode & 0o777, 0o700, d);
      }
      assert.equal(fs.statSync(path.join(dir, 'metald.db')).mode & 0o777, 0o600);
    } finally {
      await s.close();
    }
  });

  it('refuses a second open of a held data dir and frees it on close', async () => {
    const dir = freshDataDir();
    const s1 = SqliteStore.open(dir);
    const lock = path.join(dir, 'metald.lock');
    assert.equal(fs.readFileSync(lock, 'utf8').trim(), String(process.pid));
    assert.throws(() => SqliteStore.open(dir), (err: unknown) => err instanceof DataDirLockedError &&
      err.message === `data dir ${dir} is in use by pid ${process.pid}`);
    await s1.close();
    assert.equal(fs.existsSync(lock), false);
    await SqliteStore.open(dir).close();
  });

  it('refuses while another process holds it, takes over once that process dies', async () => {
    const dir = freshDataDir();
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      const { SqliteStore } = await import(${JSON.stringify(SQLITE_MODULE)});
      SqliteStore.open(${JSON.stringify(dir)});
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);`], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
        child.on('exit', (code) => reject(new Error(`holder exited early (${code})`)));
      });
      assert.throws(() => SqliteStore.open(dir), new RegExp(`in use by pid ${child.pid}$`));
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((r) => child.once('exit', r));
    // The dead holder's lock file is still there; it's stale now.
    assert.equal(fs.readFileSync(path.join(dir, 'metald.lock'), 'utf8').trim(), String(child.pid));
    await SqliteStore.open(dir).close();
  });

  it('records the migrations and keeps user_version in step', async () => {
    const dir = freshDataDir();
    await SqliteStore.open(dir).close();
    const db = new Database(path.join(dir, 'metald.db'));
    try {
      const rows = db.prepare('SELECT version, name FROM schema_migrations').all();
      assert.deepEqual(rows, [{ version: 1, name: 'create_vms' }, { version: 2, name: 'create_allocations' }]);
      assert.equal(db.pragma('user_version', { simple: true }), 2);
    } finally {
      db.close();
    }
  });

  it('refuses a database from a newer metald, and releases the lock', async () => {
    const dir = freshDataDir();
    await SqliteStore.open(dir).close();
    const db = new Database(path.join(dir, 'metald.db'));
    db.prepare(`INSERT INTO schema_migrations VALUES (7, 'future', '2030-01-01')`).run();
    db.pragma('user_version = 7');
    db.close();
    assert.throws(() => SqliteStore.open(dir), (err: unknown) => err instanceof SchemaTooNewError &&
      err.message === 'database schema version 7 is newer than this metald (2); upgrade metald');
    assert.equal(fs.existsSync(path.join(dir, 'metald.lock')), false);
  });

  it('migrate applies only the missing migrations, in order', () => {
    const db = new Database(':memory:');
    const applied: number[] = [];
    const mk = (version: number): Migration => ({ version, name: `m${version}`, up: (d) => {
      applied.push(version);
      d.exec(`CREATE TABLE t${version} (x)`);
    } });
    try {
      assert.equal(migrate(db, [mk(1)]), 1);
      assert.equal(migrate(db, [mk(1), mk(2), mk(3)]), 3);
      assert.deepEqual(applied, [1, 2, 3]);
      assert.equal(db.pragma('user_version', { simple: true }), 3);
      assert.throws(() => migrate(db, [mk(1), mk(3)]), /expected 2/);
      // A failing migration leaves the previous version intact.
      assert.throws(() => migrate(db, [mk(1), mk(2), mk(3), { version: 4, name: 'bad', up: (d) => {
        d.exec('CREATE TABLE t4 (x)');
        throw new Error('boom');
      } }]), /boom/);
      assert.equal(db.pragma('user_version', { simple: true }), 3);
      assert.equal(db.prepare(`SELECT 1 FROM sqlite_master WHERE name = 't4'`).get(), undefined);
    } finally {
      db.close();
    }
  });

  it('a commit that resolved survives the process being SIGKILLed', async () => {
    const dir = freshDataDir();
    const rows = [vm('dur-1'), vm('dur-2', { tenantId: 't9', state: 'running' })];
    const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      const { SqliteStore } = await import(${JSON.stringify(SQLITE_MODULE)});
      const store = SqliteStore.open(${JSON.stringify(dir)});
      const vms = JSON.parse(process.env.METALD_TEST_VMS);
      await store.commit(vms.map((vm) => ({ op: 'putVm', vm })));
      process.kill(process.pid, 'SIGKILL');`],
    { cwd: REPO, env: { ...process.env, METALD_TEST_VMS: JSON.stringify(rows) }, encoding: 'utf8' });
    assert.equal(res.signal, 'SIGKILL', res.stderr);
    // Not checkpointed: the rows only exist in the WAL the child left behind.
    assert.ok(fs.statSync(path.join(dir, 'metald.db-wal')).size > 0);
    const s = SqliteStore.open(dir);
    try {
      assert.deepEqual(await s.getVm('dur-1'), rows[0]);
      assert.deepEqual(ids((await s.listVms({ tenantId: 't9' })).vms), ['dur-2']);
    } finally {
      await s.close();
    }
  });

  it('pages through 10 000 rows quickly (timing printed)', async () => {
    const s = SqliteStore.open(freshDataDir());
    try {
      const n = 10_000;
      let t = performance.now();
      await s.commit(Array.from({ length: n }, (_, i) => put(vm(`vm-${String(i).padStart(6, '0')}`,
        { tenantId: `t${i % 10}`, state: VM_STATES[i % VM_STATES.length]! }))));
      console.log(`sqlite: insert ${n} rows in one commit: ${(performance.now() - t).toFixed(1)} ms`);
      for (const [label, query] of [['all', {}], ['tenant', { tenantId: 't3' }],
        ['2 states', { states: ['running', 'paused'] }],
        ['tenant+states', { tenantId: 't3', states: ['running', 'paused'] }]] as const) {
        let pages = 0;
        let seen = 0;
        let afterId: string | undefined;
        t = performance.now();
        for (;;) {
          const page = await s.listVms({ ...query, limit: 100, afterId });
          pages++;
          seen += page.vms.length;
          if (page.vms.length < 100) break;
          afterId = page.vms.at(-1)!.id;
        }
        const ms = performance.now() - t;
        console.log(`sqlite: listVms ${label}: ${pages} pages of 100 (${seen} rows), ` +
          `${(ms / pages).toFixed(3)} ms/page`);
        assert.equal(seen, (await s.listVms({ ...query, limit: 0 })).total);
      }
    } finally {
      await s.close();
    }
  });
});
