import { chown, copyFile, constants, link, mkdir, open, readFile, rm, stat, unlink } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { run } from '../../kernel/exec.js';

// Getting a VM's kernel, initrd and drives into its chroot (decision 0019):
//  1. hard link when the asset is on the chroot's filesystem: no copy, no
//     mount to undo, nothing left behind once the jail directory is removed;
//  2. bind mount when it is on another filesystem (link(2) answers EXDEV):
//     still no copy (root filesystems are gigabytes); unmounted before the
//     jail is removed;
//  3. copy only when the bind mount is refused (no CAP_SYS_ADMIN, a locked
//     mount namespace), so a VM still boots, slowly, rather than not at all.
// Read-only assets are never chowned (a hard link shares the inode, so a chown
// would change the caller's shared image): the jail user must be able to read
// them already. Writable drives belong to one VM and are chowned to the jail user.

export type StageMethod = 'hardlink' | 'bind' | 'copy';

export interface Asset {
  /** What the error messages call it ("kernel", "drive data"). */
  what: string;
  hostPath: string;
  /** Absolute path inside the chroot ("/vmlinux"). */
  jailPath: string;
  writable: boolean;
}

export interface JailUser { uid: number; gid: number }

function errno(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? '';
}

/** Fails with a message naming the asset unless the jail user can use it as needed. */
export async function checkAsset(a: Asset, user: JailUser): Promise<void> {
  if (!isAbsolute(a.hostPath)) throw new Error(`${a.what} path ${JSON.stringify(a.hostPath)} must be absolute`);
  let st;
  try {
    st = await stat(a.hostPath);
  } catch (err) {
    throw new Error(`${a.what} ${a.hostPath} cannot be used: ${errno(err) || String(err)}`);
  }
  if (!st.isFile()) throw new Error(`${a.what} ${a.hostPath} is not a regular file`);
  if (a.writable) return; // chowned to the jail user when staged
  const readable = (st.mode & 0o004) !== 0
    || (st.gid === user.gid && (st.mode & 0o040) !== 0)
    || (st.uid === user.uid && (st.mode & 0o400) !== 0);
  if (!readable) {
    throw new Error(`${a.what} ${a.hostPath} is not readable by the jail user ${user.uid}:${user.gid} (make it world-readable or group ${user.gid}-readable)`);
  }
}

/** Put one asset into the chroot; returns how. */
export async function stageAsset(chroot: string, a: Asset, user: JailUser): Promise<StageMethod> {
  await checkAsset(a, user);
  const dest = join(chroot, a.jailPath);
  if (!dest.startsWith(`${chroot}/`)) throw new Error(`jail path ${a.jailPath} leaves the chroot`);
  try {
    await link(a.hostPath, dest);
    if (a.writable) await chown(dest, user.uid, user.gid);
    return 'hardlink';
  } catch (err) {
    if (!['EXDEV', 'EPERM'].includes(errno(err))) throw err;
  }
  try {
    // A bind mount needs an existing file to cover.
    await (await open(dest, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600)).close();
    await run('mount', ['--bind', '--', a.hostPath, dest]);
    if (!a.writable) await run('mount', ['-o', 'remount,bind,ro', '--', dest]);
    else await chown(a.hostPath, user.uid, user.gid);
    return 'bind';
  } catch {
    await umountQuietly(dest);
    await unlink(dest).catch(() => {});
  }
  await copyFile(a.hostPath, dest, constants.COPYFILE_FICLONE);
  await chown(dest, user.uid, user.gid);
  return 'copy';
}

async function umountQuietly(path: string): Promise<void> {
  await run('umount', ['--', path]).catch(() => {});
}

/** Mount points at or below `dir`, deepest first (from /proc/self/mountinfo). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return text.split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map(unescape)
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Unmount whatever we bind-mounted into the jail, then remove it. Idempotent. */
export async function removeJail(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) {
    await run('umount', ['--', m]).catch(async () => {
      // Busy (a VMM we could not kill yet): detach it so the directory can go.
      await run('umount', ['-l', '--', m]);
    });
  }
  await rm(dir, { recursive: true, force: true });
}

/**
 * Fresh, empty chroot (what the jailer expects: it creates the rest itself,
 * and a second start in a used chroot fails on its mknod). 0755 like the
 * jailer's own create_dir_all; the jailer makes the chroot itself 0700 and
 * gives it to the jail user.
 */
export async function freshChroot(jail: string, chroot: string): Promise<void> {
  await removeJail(jail);
  await mkdir(chroot, { recursive: true, mode: 0o755 });
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errno(err) === 'ENOENT') return false;
    throw err;
  }
}
