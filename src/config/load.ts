// Reads the YAML config and turns every problem into "path (line N): message".
// The YAML is parsed into a Document (not straight to JS) so each zod issue
// path can be walked back to the node it came from, via the LineCounter.

import { readFileSync } from 'node:fs';
import { LineCounter, isAlias, isCollection, isMap, isScalar, isSeq, parseDocument, type Document, type Node, type Pair, Scalar } from 'yaml';
import type { z } from 'zod';
import { configSchema, type MetaldConfig, type SchemaOptions } from './schema.js';
import { editDistance, formatPath } from './schema-common.js';

export const CONFIG_ENV = 'UNKEY_METALD_CONFIG';
export const DEFAULT_CONFIG_PATH = '/etc/metald/config.yaml';

export interface ConfigIssue {
  /** "ipv6.pools[1].prefix"; "" for problems of the file as a whole. */
  path: string;
  /** 1-based; 0 when the problem has no position (e.g. unreadable file). */
  line: number;
  column: number;
  message: string;
  /** The message is about one spot inside the value (a rule's token): `column` points at it and is shown. */
  exact?: boolean;
}

export function formatIssue(i: ConfigIssue): string {
  if (i.path && i.line && i.exact) return `${i.path} (line ${i.line}, col ${i.column}): ${i.message}`;
  if (i.path && i.line) return `${i.path} (line ${i.line}): ${i.message}`;
  if (i.path) return `${i.path}: ${i.message}`;
  if (i.line) return `line ${i.line}, column ${i.column}: ${i.message}`;
  return i.message;
}

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly issues: ConfigIssue[],
  ) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
  }
}

export interface ParsedConfig {
  config: MetaldConfig;
  warnings: string[];
}

type Segment = string | number;

/** CLI flag, then $UNKEY_METALD_CONFIG, then /etc/metald/config.yaml. Empty values count as unset. */
export function resolveConfigPath(cliPath?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (cliPath) return cliPath;
  const fromEnv = env[CONFIG_ENV];
  return fromEnv ? fromEnv : DEFAULT_CONFIG_PATH;
}

export function loadConfigFile(path: string, opts: SchemaOptions = {}): ParsedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const hint = err.code === 'ENOENT' ? ` (pass --config or set ${CONFIG_ENV})` : '';
    throw new ConfigError(path, [{ path: '', line: 0, column: 0, message: `cannot read config file ${path}: ${err.code ?? err.message}${hint}` }]);
  }
  return parseConfig(text, path, opts);
}

// Built once per rule parser rather than on every parse.
const schemas = new WeakMap<object, ReturnType<typeof configSchema>>();
const NO_PARSER = {};
function schemaFor(opts: SchemaOptions) {
  const key = opts.ruleParser ?? NO_PARSER;
  let s = schemas.get(key);
  if (!s) schemas.set(key, (s = configSchema(opts)));
  return s;
}

export function parseConfig(text: string, source: string, opts: SchemaOptions = {}): ParsedConfig {
  const lc = new LineCounter();
  // uniqueKeys off: duplicates are reported below with both lines, which yaml's own error lacks.
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: false, prettyErrors: false });
  sources.set(doc, text);
  const pos = (offset: number) => lc.linePos(offset);
  const issues: ConfigIssue[] = doc.errors.map((e) => {
    const { line, col } = pos(e.pos[0]);
    // yaml's wording for this one addresses the programmer, not the operator.
    const message = e.code === 'MULTIPLE_DOCS' ? 'a config file holds one YAML document, found another after "---"' : (e.message.split('\n')[0] as string);
    return { path: '', line, column: col, message };
  });
  if (issues.length === 0) checkStructure(doc, pos, issues);
  if (issues.length > 0) throw new ConfigError(source, sortIssues(issues));

  let data: unknown;
  try {
    // maxAliasCount bounds alias expansion ("billion laughs").
    data = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (e) {
    throw new ConfigError(source, [{ path: '', line: 0, column: 0, message: (e as Error).message }]);
  }
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(source, [{ path: '', line: 1, column: 1, message: 'the configuration must be a YAML mapping of keys to values' }]);
  }
  const schema = schemaFor(opts);
  const result = schema.safeParse(data, { reportInput: true });
  if (!result.success) {
    for (const issue of result.error.issues) issues.push(...toConfigIssues(issue, doc, pos, schema));
    throw new ConfigError(source, sortIssues(issues));
  }
  const warnings = doc.warnings.map((w) => `line ${pos(w.pos[0]).line}: ${w.message.split('\n')[0]}`);
  warnings.push(...configWarnings(result.data, (path) => lineOf(doc, path, pos)));
  return { config: result.data, warnings };
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.sort((a, b) => a.line - b.line || a.column - b.column);
}

type Pos = (offset: number) => { line: number; col: number };

function keyText(key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key);
}

/** Problems yaml accepts but toJS would hide or crash on: duplicate keys, complex keys, dangling aliases. */
function checkStructure(doc: Document, pos: Pos, issues: ConfigIssue[]): void {
  const walk = (node: unknown, path: Segment[]): void => {
    if (isMap(node)) {
      const first = new Map<string, Pair>();
      for (const pair of node.items) {
        if (pair.key !== null && !isScalar(pair.key)) {
          const { line, col } = pos(rangeStart(pair.key) ?? 0);
          issues.push({ path: formatPath(path), line, column: col, message: 'keys must be plain names, not lists or mappings' });
          continue;
        }
        const k = keyText(pair.key);
        const prev = first.get(k);
        const at = (p: Pair) => pos((p.key as Node | null)?.range?.[0] ?? 0);
        if (prev) {
          const { line, col } = at(pair);
          issues.push({ path: formatPath([...path, k]), line, column: col, message: `duplicate key, first given at line ${at(prev).line}` });
        } else first.set(k, pair);
        walk(pair.value, [...path, k]);
      }
    } else if (isSeq(node)) node.items.forEach((item, i) => walk(item, [...path, i]));
    else if (isAlias(node) && node.resolve(doc) === undefined) {
      const { line, col } = pos(rangeStart(node) ?? 0);
      issues.push({ path: formatPath(path), line, column: col, message: `alias *${node.source} has no anchor &${node.source} before it` });
    }
  };
  walk(doc.contents, []);
}

interface Located {
  /** Deepest node found along the path, and how many segments it consumed. */
  node: unknown;
  key: unknown;
  depth: number;
}

function locate(doc: Document, path: readonly Segment[]): Located {
  let node: unknown = doc.contents;
  let key: unknown;
  let depth = 0;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc);
    let next: unknown;
    let nextKey: unknown;
    if (isMap(node)) {
      const pair = node.items.find((p) => keyText(p.key) === String(seg));
      if (!pair) break;
      next = pair.value;
      nextKey = pair.key;
    } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
      next = node.items[seg];
    } else break;
    node = next;
    key = nextKey;
    depth++;
  }
  return { node, key, depth };
}

function rangeStart(n: unknown): number | undefined {
  return (n as Node | null)?.range?.[0];
}

/**
 * Where to point for `path`: a scalar value at itself; a mapping or list at the
 * key that introduces it (the line the operator reads as "this section"); an
 * unknown key at the key; a missing key at its parent. Line 0: nowhere in the file.
 */
function lineOf(doc: Document, path: readonly Segment[], pos: Pos, opts: { column?: number; atKey?: boolean } = {}): { line: number; col: number } {
  const { node, key, depth } = locate(doc, path);
  const missing = depth < path.length;
  if (missing && depth === 0) return { line: 0, col: 0 };
  let offset: number | undefined;
  const { column } = opts;
  if (isScalar(node) && !missing && !opts.atKey) {
    offset = rangeStart(node);
    if (offset !== undefined && column !== undefined && column >= 1 && (node.type === Scalar.PLAIN || node.type === Scalar.QUOTE_DOUBLE || node.type === Scalar.QUOTE_SINGLE)) {
      offset += node.type === Scalar.PLAIN ? column - 1 : 1 + rawIndex(doc, offset + 1, column - 1, node.type === Scalar.QUOTE_DOUBLE);
    }
  } else if (key !== undefined && (opts.atKey || isCollection(node) || missing || node == null)) {
    offset = rangeStart(key);
  }
  offset ??= rangeStart(node) ?? 0;
  return pos(offset);
}

/**
 * Where the `index`-th character of a quoted scalar's value sits in the
 * source, counted from `start` (just after the opening quote): escapes
 * (\t, \u00e9 in double quotes, '' in single quotes) take more than one source character.
 * Folded line breaks are rare in one-line rules and are counted as one.
 */
function rawIndex(doc: Document, start: number, index: number, double: boolean): number {
  const src = sources.get(doc) ?? '';
  let raw = 0;
  for (let k = 0; k < index && start + raw < src.length; k++) {
    const c = src[start + raw];
    if (double && c === '\\') {
      const e = src[start + raw + 1] ?? '';
      raw += e === 'x' ? 4 : e === 'u' ? 6 : e === 'U' ? 10 : 2;
    } else if (!double && c === "'" && src[start + raw + 1] === "'") raw += 2;
    else raw += 1;
  }
  return raw;
}

// The source text of each parsed document, for rawIndex.
const sources = new WeakMap<Document, string>();

function unwrap(s: z.ZodType): z.ZodType {
  let cur = s as z.ZodType & { _zod: { def: Record<string, unknown> } };
  for (;;) {
    const def = cur._zod.def;
    const inner = def.innerType ?? (def.type === 'pipe' ? def.in : undefined);
    if (!inner) return cur;
    cur = inner as typeof cur;
  }
}

function shapeAt(schema: z.ZodType, path: readonly Segment[]): Record<string, z.ZodType> | undefined {
  let cur = unwrap(schema);
  for (const seg of path) {
    const def = (cur as unknown as { _zod: { def: Record<string, unknown> } })._zod.def;
    if (def.type === 'object' && typeof seg === 'string') cur = (def.shape as Record<string, z.ZodType>)[seg] as z.ZodType;
    else if (def.type === 'array') cur = def.element as z.ZodType;
    else return undefined;
    if (!cur) return undefined;
    cur = unwrap(cur);
  }
  const def = (cur as unknown as { _zod: { def: Record<string, unknown> } })._zod.def;
  return def.type === 'object' ? (def.shape as Record<string, z.ZodType>) : undefined;
}

const homesCache = new WeakMap<z.ZodType, Map<string, string[]>>();

/** Where each key may appear, e.g. "enable_ra_guard" -> ["ipv6.bridge", "ipv6.bridges[]", "ipv6.security"]. */
function keyHomes(schema: z.ZodType): Map<string, string[]> {
  const cached = homesCache.get(schema);
  if (cached) return cached;
  const homes = new Map<string, string[]>();
  homesCache.set(schema, homes);
  const walk = (s: z.ZodType, path: string): void => {
    const cur = unwrap(s);
    const def = (cur as unknown as { _zod: { def: Record<string, unknown> } })._zod.def;
    if (def.type === 'array') return walk(def.element as z.ZodType, `${path}[]`);
    if (def.type !== 'object') return;
    for (const [k, v] of Object.entries(def.shape as Record<string, z.ZodType>)) {
      homes.set(k, [...(homes.get(k) ?? []), path || '(top level)']);
      walk(v, path ? `${path}.${k}` : k);
    }
  };
  walk(schema, '');
  return homes;
}

function unknownKeyMessage(schema: z.ZodType, parent: readonly Segment[], key: string): string {
  const known = Object.keys(shapeAt(schema, parent) ?? {});
  const best = known
    .map((k) => ({ k, d: editDistance(key.toLowerCase(), k) }))
    .filter(({ k, d }) => d <= Math.max(1, Math.floor(k.length / 3)))
    .sort((a, b) => a.d - b.d)[0];
  if (best) return `unknown key, did you mean "${best.k}"?`;
  const homes = keyHomes(schema).get(key);
  if (homes?.length) return `unknown key here (it belongs in ${homes.join(' or ')})`;
  return 'unknown key';
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping',
};

function describe(value: unknown, secret: boolean): string {
  if (value === null) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (secret) return `a ${typeof value}`;
  return JSON.stringify(value) ?? String(value);
}

function toConfigIssues(issue: z.core.$ZodIssue, doc: Document, pos: Pos, schema: z.ZodType): ConfigIssue[] {
  const path = issue.path.filter((s): s is Segment => typeof s === 'string' || typeof s === 'number');
  const at = (p: Segment[], message: string, opts: { column?: number; atKey?: boolean } = {}): ConfigIssue => {
    const { line, col } = lineOf(doc, p, pos, opts);
    return { path: formatPath(p), line, column: col, message };
  };
  const last = path[path.length - 1];
  const secret = last === 'token' || last === 'token_sha256';
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((k) => at([...path, k], unknownKeyMessage(schema, path, k), { atKey: true }));
    case 'invalid_type':
      if (!('input' in issue) || input === undefined) return [at(path, 'missing required key')];
      return [at(path, `expected ${TYPE_NAMES[issue.expected] ?? issue.expected}, got ${describe(input, secret)}`)];
    case 'invalid_value':
      return [at(path, `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describe(input, secret)}`)];
    case 'custom': {
      const column = (issue.params as { column?: unknown } | undefined)?.column;
      return [typeof column === 'number' ? { ...at(path, issue.message, { column }), exact: true } : at(path, issue.message)];
    }
    default:
      return [at(path, issue.message)];
  }
}

function configWarnings(cfg: MetaldConfig, lineAt: (path: Segment[]) => { line: number }): string[] {
  const out: string[] = [];
  const warn = (path: Segment[], message: string) => {
    const { line } = lineAt(path);
    out.push(line ? `${formatPath(path)} (line ${line}): ${message}` : `${formatPath(path)}: ${message}`);
  };
  const bridges: [Segment[], NonNullable<MetaldConfig['ipv6']['bridge']>][] = [
    ...(cfg.ipv6.bridge ? [[['ipv6', 'bridge'], cfg.ipv6.bridge] as [Segment[], typeof cfg.ipv6.bridge]] : []),
    ...cfg.ipv6.bridges.map((b, i) => [['ipv6', 'bridges', i], b] as [Segment[], typeof b]),
  ];
  if (cfg.ipv6.enabled) {
    for (const [path, b] of bridges) {
      // SPEC-NOTES 9: honoured, but the operator should know what it costs.
      if (b.enable_stp) {
        warn([...path, 'enable_stp'], `bridge ${b.name} runs STP: new VM ports wait 2×forward_delay = ${2 * b.forward_delay} s before forwarding`);
      }
    }
    if (!cfg.ipv6.default_pool && cfg.ipv6.pools.length === 0) warn(['ipv6'], 'IPv6 is enabled but no pool is configured: VMs cannot get IPv6 addresses');
  } else if (cfg.ipv6.default_pool || cfg.ipv6.pools.length || bridges.length) {
    warn(['ipv6', 'enabled'], 'IPv6 is disabled: the pools and bridges in this section are not used');
  }
  if (cfg.auth.mode === 'none') {
    const exposed = cfg.listen_address === '127.0.0.1' || cfg.listen_address === '::1' ? '' : ` and ${cfg.listen_address} is not a loopback address`;
    warn(['auth', 'mode'], `API authentication is off: anyone who can reach port ${cfg.port} is an admin${exposed}`);
    if (cfg.auth.tokens.length) warn(['auth', 'tokens'], 'tokens are ignored while auth.mode is none');
  } else if (cfg.auth.tokens.length === 0) {
    warn(['auth', 'tokens'], 'mode is tokens (the default) but no tokens are configured: metald serve will refuse to start until tokens are added or auth.mode: none is set');
  }
  if (cfg.billing.enabled) warn(['billing', 'enabled'], 'billing is accepted and validated but not implemented yet: no usage is sent');
  if (cfg.ha.enabled) warn(['ha', 'enabled'], 'high availability is accepted and validated but not implemented yet: this node runs standalone');
  return out;
}
