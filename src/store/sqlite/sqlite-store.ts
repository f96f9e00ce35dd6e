import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { VmRecord } from '../../core/vm/record.js';
import type { Mutation, Store, VmPage, VmQuery } from '../store.js';
import { checkLimit, validateCommit } from '../memory-store.js';
import { AllocationConflictError, StoreConflictError } from '../store.js';
import type { Allocation } from '../../core/ipam/types.js';
import { VmIndex } from '../vm-index.js';
import { deepFreeze } from '../freeze.js';
import { migrate } from './migrations.js';


const DB_FILE = 'metald.db';
const LOCK_FILE = 'metald.lock';

export class DataDirLockedError extends Error {
  constructor(
    readonly dataDir: string,
    readonly pid: number,
  ) {
    super(`data dir ${dataDir} is in use by pid ${pid}`);
    this.name = 'DataDirLockedError';
  }
}


/**
 * The single-host store: one SQLite file, one connection, one process.
 * better-sqlite3 is synchronous, so every method finishes its SQLite work
 * before returning a settled promise; the async signature is for etcd.
 */
export class SqliteStore implements Store {
  // Statements are prepared once; SQLite re-plans nothing per call.
  private readonly revisionStmt: Database.Statement<[string], number>;
  private readonly insertStmt: Database.Statement<[Row]>;
  private readonly updateStmt: Database.Statement<[Row]>;
  private readonly deleteStmt: Database.Statement<[string]>;
  private readonly allocInsert: Database.Statement<[AllocRow]>;
  private readonly allocUpdate: Database.Statement<[AllocRow]>;
  private readonly allocDelete: Database.Statement<[string]>;
  private readonly commitTxn: Database.Transaction<(mutations: readonly Mutation[]) => void>;
  private closed = false;
  // This process holds the data-dir lock, so it is the only writer: an
  // in-memory index loaded at open and updated after each commit answers
  // every read. SQLite is the durable copy. The same revision is the same
  // frozen object, which lets the API cache its serialisation.
  private readonly index = new VmIndex();

  private constructor(
    private readonly db: Database.Database,
    private readonly lock: DirLock,
  ) {
    this.revisionStmt = db
      .prepare<[string], number>('SELECT revision FROM vms WHERE id = ?')
      .pluck();
    // Revision 1 means "create": ON CONFLICT DO NOTHING turns an existing
    // row into changes === 0, i.e. a conflict, without a separate read.
    this.insertStmt = db.prepare<[Row]>(`
      INSERT INTO vms (id, tenant_id, state, revision, doc, created_at, updated_at)
      VALUES (@id, @tenant_id, @state, @revision, @doc, @created_at, @updated_at)
      ON CONFLICT (id) DO NOTHING`);
    // The WHERE on revision is the compare-and-swap.
    this.updateStmt = db.prepare<[Row]>(`
      UPDATE vms SET tenant_id = @tenant_id, state = @state, revision = @revision,
        doc = @doc, created_at = @created_at, updated_at = @updated_at
      WHERE id = @id AND revision = @revision - 1`);
    this.deleteStmt = db.prepare<[string]>('DELETE FROM vms WHERE id = ?');
    this.allocInsert = db.prepare<[AllocRow]>(
      'INSERT INTO allocations (key, pool_id, vm_id, tenant_id, doc) VALUES (@key, @pool_id, @vm_id, @tenant_id, @doc) ON CONFLICT (key) DO NOTHING');
    this.allocUpdate = db.prepare<[AllocRow]>(
      'UPDATE allocations SET pool_id = @pool_id, vm_id = @vm_id, tenant_id = @tenant_id, doc = @doc WHERE key = @key');
    this.allocDelete = db.prepare<[string]>('DELETE FROM allocations WHERE key = ?');
    for (const doc of db.prepare<[], string>('SELECT doc FROM vms').pluck().iterate()) {
      this.index.put(deepFreeze(JSON.parse(doc) as VmRecord));
    }
    this.commitTxn = db.transaction((mutations: readonly Mutation[]) => {
      for (const m of mutations) this.apply(m);
    });
  }

  static open(dataDir: string): SqliteStore {
    const dir = path.resolve(dataDir);
    makePrivateDir(dir);
    // Reserved now so their modes are right from the first start:
    // wal/   — etcd's --wal-dir when metald runs in cluster mode;
    // pools/ — IPAM pool exports.
    makePrivateDir(path.join(dir, 'wal'));
    makePrivateDir(path.join(dir, 'pools'));

    const lock = DirLock.acquire(dir);
    let db: Database.Database | undefined;
    try {
      const file = path.join(dir, DB_FILE);
      db = new Database(file);
      // Tenant configs live here; -wal/-shm inherit this mode from the db file.
      fs.chmodSync(file, 0o600);
      db.pragma('journal_mode = WAL');
      // FULL fsyncs the WAL on every commit, so a resolved commit() survives
      // power loss; NORMAL could drop the last commits, and the API would
      // already have told the caller "done".
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
      migrate(db);
      return new SqliteStore(db, lock);
    } catch (err) {
      db?.close();
      lock.release();
      throw err;
    }
  }

  async getVm(id: string): Promise<VmRecord | undefined> {
    return this.index.get(id);
  }

  async listVms(q: VmQuery): Promise<VmPage> {
    checkLimit(q.limit);
    return this.index.list(q);
  }

  async countVms(): Promise<number> {
    return this.index.size;
  }

  async listAllocations(): Promise<Allocation[]> {
    return this.db.prepare<[], string>('SELECT doc FROM allocations ORDER BY key').pluck().all().map((d) => JSON.parse(d) as Allocation);
  }

  async commit(mutations: readonly Mutation[]): Promise<void> {
    // Checked against the index first (cheap, and the index mirrors the
    // table); SQLite's compare-and-swap below is the guard that counts.
    const staged = validateCommit(mutations, (id) => this.index.get(id)?.revision ?? 0);
    // IMMEDIATE takes the write lock up front so a concurrent reader (say an
    // operator's sqlite3 shell) makes us wait busy_timeout, not fail mid-way.
    this.commitTxn.immediate(staged);
    for (const m of staged) {
      if (m.op === 'deleteVm') this.index.delete(m.id);
      else if (m.op === 'putVm') this.index.put(m.vm);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      // Cheap, and keeps planner statistics fresh for the next start.
      this.db.pragma('optimize');
      this.db.close();
    } finally {
      this.lock.release();
    }
  }

  /** Reads a PRAGMA on the live connection (diagnostics and tests). */
  pragma(name: string): unknown {
    return this.db.pragma(name, { simple: true });
  }

  private apply(m: Mutation): void {
    switch (m.op) {
      case 'deleteVm':
        this.deleteStmt.run(m.id);
        return;
      case 'putVm': {
        const row = toRow(m.vm);
        const stmt = m.vm.revision === 1 ? this.insertStmt : this.updateStmt;
        if (stmt.run(row).changes === 0) {
          const actual = this.revisionStmt.get(m.vm.id) ?? 0;
          // Throwing inside the transaction function rolls back everything.
          throw new StoreConflictError(m.vm.id, m.vm.revision - 1, actual);
        }
        return;
      }
      case 'putAllocation': {
        const a = m.allocation;
        const row: AllocRow = { key: a.key, pool_id: a.poolId, vm_id: a.vmId, tenant_id: a.tenantId, doc: JSON.stringify(a) };
        if ((m.create ? this.allocInsert : this.allocUpdate).run(row).changes === 0) {
          throw new AllocationConflictError(a.key, m.create);
        }
        return;
      }
      case 'deleteAllocation':
        this.allocDelete.run(m.key);
        return;
      default: {
        const never: never = m;
        throw new Error(`unknown mutation ${JSON.stringify(never)}`);
      }
    }
  }
}

interface AllocRow {
  key: string;
  pool_id: string;
  vm_id: string;
  tenant_id: string;
  doc: string;
}

interface Row {
  id: string;
  tenant_id: string;
  state: string;
  revision: number;
  doc: string;
  created_at: string;
  updated_at: string;
}

function toRow(vm: VmRecord): Row {
  return {
    id: vm.id,
    tenant_id: vm.tenantId,
    state: vm.state,
    revision: vm.revision,
    doc: JSON.stringify(vm),
    created_at: vm.createdAt,
    updated_at: vm.updatedAt,
  };
}

function makePrivateDir(dir: string): void {
  // mkdir's mode is filtered by umask; chmod makes it exact. Only for dirs we
  // create: tightening an operator's pre-existing directory isn't ours to do.
  const existed = fs.existsSync(dir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!existed) fs.chmodSync(dir, 0o700);
}

/**
 * `<dataDir>/metald.lock` holding the owner's pid. Two metalds on one data
 * dir would each believe they own every VM and tap device in it; SQLite's own
 * locking only serialises transactions, it doesn't stop that.
 */
class DirLock {
  private released = false;

  private constructor(private readonly file: string) {}

  static acquire(dir: string): DirLock {
    const file = path.join(dir, LOCK_FILE);
    // The lock becomes visible only fully written: write a private temp file,
    // then link() it into place, which fails atomically if the lock exists.
    // (open 'wx' + write would expose an empty file a rival could misread.)
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${process.pid}\n`, { mode: 0o600 });
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          fs.linkSync(tmp, file);
          return new DirLock(file);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
        const owner = readPid(file);
        if (owner !== undefined && isAlive(owner)) throw new DataDirLockedError(dir, owner);
        takeOverStale(file, owner);
      }
      throw new Error(`could not take lock ${file}: it keeps changing hands`);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    // Only remove it if it's still ours; a lock someone took over after we
    // were presumed dead must survive our late close().
    if (readPid(this.file) === process.pid) fs.rmSync(this.file, { force: true });
  }
}

function takeOverStale(file: string, stalePid: number | undefined): void {
  // Two starters may both see the same stale lock. Renaming it aside is
  // atomic, so exactly one of them moves any given file; if what we moved is
  // not the stale lock we inspected, a rival already replaced it: put it back.
  const aside = `${file}.stale.${process.pid}`;
  try {
    fs.renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (readPid(aside) !== stalePid) {
    try {
      fs.linkSync(aside, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  fs.rmSync(aside, { force: true });
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user — still alive.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
