// PURE: the tokens of one policy rule and the one error type both rule
// languages throw. A rule is short text typed by a person, so the lexer is a
// single pass that keeps each token's column: every error can then point at
// the exact word to fix, and the config loader turns that column into a
// column of the YAML file.

/** Longest rule accepted; bounds the work a hostile API value can cause. */
export const MAX_RULE_LENGTH = 512;

export interface Token {
  /** As written (keywords are compared case-insensitively). */
  text: string;
  /** 1-based column of the first character inside the rule. */
  column: number;
  kind: 'word' | 'comma';
}

/**
 * The only thing the parsers throw. `column` is 1-based inside the rule;
 * `expected` is the part after "expected " (what would have been valid there).
 */
export class ParseError extends Error {
  constructor(
    message: string,
    readonly column: number,
    readonly expected?: string,
  ) {
    super(message);
    this.name = 'ParseError';
  }
}

// Printable ASCII only: a rule is a handful of keywords, addresses and
// numbers, and a look-alike Unicode character must not be read as a separator.
const ALLOWED = /^[\x20-\x7e\t]*$/;

export function tokenize(rule: string): Token[] {
  if (typeof rule !== 'string') throw new ParseError('a rule must be text', 1);
  if (rule.length > MAX_RULE_LENGTH) throw new ParseError(`a rule is at most ${MAX_RULE_LENGTH} characters`, MAX_RULE_LENGTH + 1);
  if (!ALLOWED.test(rule)) {
    // Columns count UTF-16 units, as the YAML loader does.
    let i = 0;
    while (ALLOWED.test(rule[i] as string)) i++;
    const ch = String.fromCodePoint(rule.codePointAt(i) as number);
    throw new ParseError(`unexpected character ${JSON.stringify(ch)} (rules are plain ASCII)`, i + 1);
  }
  const out: Token[] = [];
  let i = 0;
  while (i < rule.length) {
    const c = rule[i] as string;
    if (c === ' ' || c === '\t') {
      i++;
    } else if (c === ',') {
      out.push({ text: ',', column: i + 1, kind: 'comma' });
      i++;
    } else {
      const start = i;
      while (i < rule.length && !' \t,'.includes(rule[i] as string)) i++;
      out.push({ text: rule.slice(start, i), column: start + 1, kind: 'word' });
    }
  }
  return out;
}

/**
 * A cursor over the tokens with the helpers both grammars use. Errors say
 * what was expected and what was found, at the found token's column (or just
 * past the end of the rule when it ended too early).
 */
export class Cursor {
  private i = 0;
  constructor(
    private readonly tokens: readonly Token[],
    private readonly ruleLength: number,
  ) {}

  peek(): Token | undefined {
    return this.tokens[this.i];
  }

  next(): Token | undefined {
    return this.tokens[this.i++];
  }

  atEnd(): boolean {
    return this.i >= this.tokens.length;
  }

  /** Consumes the next token when it is `word` (any case). */
  accept(word: string): Token | undefined {
    const t = this.peek();
    if (t && t.kind === 'word' && t.text.toLowerCase() === word) {
      this.i++;
      return t;
    }
    return undefined;
  }

  acceptComma(): boolean {
    const t = this.peek();
    if (t?.kind === 'comma') {
      this.i++;
      return true;
    }
    return false;
  }

  /** Consumes one of `words` (any case) and returns it in lower case, or fails with "expected <what>". */
  oneOf<const W extends string>(words: readonly W[], what: string): { word: W; token: Token } {
    const t = this.peek();
    const low = t?.kind === 'word' ? t.text.toLowerCase() : undefined;
    if (t && low !== undefined && (words as readonly string[]).includes(low)) {
      this.i++;
      return { word: low as W, token: t };
    }
    throw this.fail(what);
  }

  /** Error "expected <what>, got ..." at the next token (or at the end). */
  fail(what: string, at: Token | undefined = this.peek()): ParseError {
    const got = at ? (at.kind === 'comma' ? 'a comma' : JSON.stringify(at.text)) : 'the end of the rule';
    return new ParseError(`expected ${what}, got ${got}`, at ? at.column : this.ruleLength + 1, what);
  }

  /** The rule must end here. */
  end(what = 'the end of the rule'): void {
    if (!this.atEnd()) throw this.fail(what);
  }
}

/** Quoted list for messages: "a", "b" or "c". */
export function orList(words: readonly string[]): string {
  const q = words.map((w) => `"${w}"`);
  return q.length <= 1 ? (q[0] ?? '') : `${q.slice(0, -1).join(', ')} or ${q[q.length - 1]}`;
}
