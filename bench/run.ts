// `npm run bench -- <name>`: runs bench/<name>.ts. Each benchmark prints its
// figures and ends with one line: BENCH <name> <figure>=<value> ... target <what> met|missed
import { readdirSync } from 'node:fs';

const name = process.argv[2];
const available = readdirSync(new URL('.', import.meta.url))
  .filter((f) => f.endsWith('.ts') && !['run.ts'].includes(f) && !f.startsWith('_'))
  .map((f) => f.slice(0, -3));
if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- <name>   (one of: ${available.join(', ')})`);
  process.exit(2);
}
const mod = await import(`./${name}.ts`);
await mod.main(process.argv.slice(3));
