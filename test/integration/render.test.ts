// `metald render` prints what metald would load; nftables itself must accept
// it (`nft -c`, check only, in a namespace of the test's own).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { REPO } from '../helpers/daemon-harness.js';

const ns = `mtdtest-render-${randomBytes(3).toString('hex')}`;
execFileSync('ip', ['netns', 'add', ns]);
after(() => execFileSync('ip', ['netns', 'del', ns]));

const render = (file: string, ...flags: string[]) =>
  execFileSync(process.execPath, ['bin/metald.js', 'render', file, ...flags], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });

for (const file of ['config/quickstart.yaml', 'test/fixtures/config/guide-section1.yaml']) {
  test(`${file}: the rendered tables pass nft -c, radvd.conf is printed too`, () => {
    const nft = render(file, '--nft');
    assert.match(nft, /^table bridge \S+_guard \{/m);
    assert.match(nft, /^table ip6 \S+_security \{/m);
    execFileSync('ip', ['netns', 'exec', ns, 'nft', '-c', '-f', '-'], { input: nft });
    assert.match(render(file), /# radvd\.conf\n/);
  });
}

test('the guide config keeps its table name: table ip6 metald_security', () => {
  assert.match(render('test/fixtures/config/guide-section1.yaml', '--nft'), /^table ip6 metald_security \{/m);
});

test('render applies nothing: no table, link or namespace appears where it runs', () => {
  const before = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, 'bin/metald.js', 'render', 'config/quickstart.yaml'],
    { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  assert.match(out, /^table bridge \S+_guard \{/m, 'it rendered the tables');
  assert.equal(execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset'], { encoding: 'utf8' }).trim(), '', 'no nftables table');
  const links = JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string }[];
  assert.deepEqual(links.map((l) => l.ifname), ['lo'], 'no link');
  assert.equal(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }), before, 'no namespace');
});
