import type Database from 'better-sqlite3';

// Schema changes are append-only: a shipped migration is never edited, because
// databases in the field already recorded it as applied. Fix forward with a
// new version instead.

export interface Migration {
  version: number;
  name: string;
  up: (db: Database.Database) => void;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'create_vms',
    up(db) {
      // The whole record lives in `doc` so adding VmRecord fields needs no
      // migration; only what we filter or sort on is lifted into columns.
      // (tenant_id, id) and (state, id) end in id so filtered keyset pages
      // walk the index in page order instead of sorting.
      db.exec(`
        CREATE TABLE vms (
          id         TEXT PRIMARY KEY,
          tenant_id  TEXT NOT NULL,
          state      TEXT NOT NULL,
          revision   INTEGER NOT NULL,
          doc        TEXT NOT NULL,
          created_at TEXT,
          updated_at TEXT
        );
        CREATE INDEX vms_tenant_id ON vms (tenant_id, id);
        CREATE INDEX vms_state_id ON vms (state, id);
      `);
    },
  },
  {
    version: 2,
    name: 'create_allocations',
    up(db) {
      // One row per IP allocation (a /128 or a /64), keyed by its canonical
      // prefix text so the same prefix can never be stored twice. Written in
      // the same transaction as the VM that owns it.
      db.exec(`
        CREATE TABLE allocations (
          key       TEXT PRIMARY KEY,
          pool_id   TEXT NOT NULL,
          vm_id     TEXT NOT NULL,
          tenant_id TEXT NOT NULL,
          doc       TEXT NOT NULL
        );
        CREATE INDEX allocations_vm ON allocations (vm_id);
      `);
    },
  },
];

export class SchemaTooNewError extends Error {
  constructor(
    readonly dbVersion: number,
    readonly codeVersion: number,
  ) {
    super(
      `database schema version ${dbVersion} is newer than this metald (${codeVersion}); upgrade metald`,
    );
    this.name = 'SchemaTooNewError';
  }
}

/** Highest version recorded in the database (0 for a fresh one). */
export function schemaVersion(db: Database.Database): number {
  // user_version alone would be enough, but the table also survives tools
  // that copy rows without the header, and tells an operator when and what.
  const userVersion = db.pragma('user_version', { simple: true }) as number;
  const hasTable = db
    .prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`)
    .get();
  if (!hasTable) return userVersion;
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as {
    v: number | null;
  };
  return Math.max(userVersion, row.v ?? 0);
}

/**
 * Brings the schema up to the newest migration. Each migration gets its own
 * transaction so a failure leaves the database at the last good version
 * rather than half-way through one. Returns the resulting version.
 */
export function migrate(
  db: Database.Database,
  migrations: readonly Migration[] = MIGRATIONS,
): number {
  checkOrdered(migrations);
  const latest = migrations.at(-1)?.version ?? 0;

  db.exec(`
    CREATE TABLE IF NOT EXISTS schema_migrations (
      version    INTEGER PRIMARY KEY,
      name       TEXT,
      applied_at TEXT
    )
  `);
  const current = schemaVersion(db);
  // An older binary would misread columns it doesn't know about, or write
  // rows a newer one can't interpret; refusing is the only safe answer.
  if (current > latest) throw new SchemaTooNewError(current, latest);

  const record = db.prepare(
    'INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)',
  );
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      m.up(db);
      record.run(m.version, m.name, new Date().toISOString());
      // PRAGMA can't take a bound parameter; version is a checked integer.
      db.pragma(`user_version = ${m.version}`);
    }).immediate();
  }
  return Math.max(current, latest);
}

function checkOrdered(migrations: readonly Migration[]): void {
  // Gaps or reordering would silently skip a migration on some databases.
  migrations.forEach((m, i) => {
    if (m.version !== i + 1 || !Number.isInteger(m.version)) {
      throw new Error(`migration ${m.name} has version ${m.version}, expected ${i + 1}`);
    }
  });
}
