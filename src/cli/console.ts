/**
 * `kiln console BUILD`: connects this terminal to the serial console of a running build; its QEMU
 * serves the console on serial.sock in the build's work directory. The guest's serial line is the
 * terminal, so kiln only relays bytes: raw mode on a TTY hands every key (Ctrl-C too) to the guest,
 * except Ctrl-], which detaches like telnet's escape and leaves the VM and the build running.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { listRunningBuilds, type RunningBuild } from '../build/build.js';
import { isAlive } from '../util/pid.js';

export interface ConsoleArgs {
  build: string;
  pid?: number;
}

const detachKey = 0x1d; // Ctrl-]
/** QEMU serves one console client at a time and leaves a second one hanging unanswered: refuse it. */
const lockFile = 'console.pid';

function describe(b: RunningBuild): string {
  return `${b.build}  (kiln pid ${b.pid}, started ${new Date(b.startedAt).toTimeString().slice(0, 8)}, ${b.template})`;
}

/** The one running build the arguments name, or why there is none. */
export function chooseBuild(args: ConsoleArgs, running: RunningBuild[]): RunningBuild | string {
  const list = (builds: RunningBuild[]) => builds.map((b) => `  ${describe(b)}`).join('\n');
  const named = running.filter((b) => b.build === args.build && (args.pid === undefined || b.pid === args.pid));
  if (named.length === 1) return named[0]!;
  if (named.length > 1)
    return `${named.length} builds named "${args.build}" are running; choose one with --pid:\n${list(named)}`;
  const none = `no build named "${args.build}"${args.pid === undefined ? '' : ` run by kiln pid ${args.pid}`} is running`;
  return running.length ? `${none}; running builds:\n${list(running)}` : `${none} (no kiln build is running)`;
}

function takeLock(b: RunningBuild): string | undefined {
  const file = path.join(b.workDir, lockFile);
  try {
    writeFileSync(file, String(process.pid), { flag: 'wx' });
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `build "${b.build}" has just finished`;
    if (code !== 'EEXIST') throw e;
  }
  const holder = Number(readFileSync(file, 'utf8').trim());
  if (isAlive(holder))
    return `the serial console of "${b.build}" is already attached (kiln console, pid ${holder}); detach there first`;
  writeFileSync(file, String(process.pid)); // left by a console that was killed
  return undefined;
}

function connect(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Relays until Ctrl-] (or the end of input, or a signal) detaches, or the VM closes the console. */
function relay(
  socket: net.Socket,
  input: NodeJS.ReadStream,
  output: NodeJS.WriteStream,
): Promise<'detached' | 'closed'> {
  return new Promise((resolve) => {
    const raw = Boolean(input.isTTY);
    let finished = false;
    const finish = (how: 'detached' | 'closed') => {
      if (finished) return;
      finished = true;
      input.off('data', onInput);
      input.off('end', onEnd);
      for (const s of signals) process.off(s, onSignal);
      if (raw) input.setRawMode(false);
      input.pause();
      socket.end();
      resolve(how);
    };
    const onInput = (chunk: Buffer) => {
      const at = chunk.indexOf(detachKey);
      if (at < 0) {
        socket.write(chunk);
        return;
      }
      if (at > 0) socket.write(chunk.subarray(0, at));
      finish('detached');
    };
    const onEnd = () => finish('detached');
    const onSignal = () => finish('detached');
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, onSignal);
    socket.on('data', (d: Buffer) => output.write(d));
    socket.on('error', () => {
      /* 'close' follows and ends the relay */
    });
    socket.on('close', () => finish('closed'));
    if (raw) input.setRawMode(true);
    input.on('data', onInput);
    input.on('end', onEnd);
    input.resume();
  });
}

export async function consoleCommand(args: ConsoleArgs): Promise<number> {
  const chosen = chooseBuild(args, listRunningBuilds());
  if (typeof chosen === 'string') {
    process.stderr.write(`error: ${chosen}\n`);
    return 1;
  }
  const refused = takeLock(chosen);
  if (refused) {
    process.stderr.write(`error: ${refused}\n`);
    return 1;
  }
  try {
    let socket: net.Socket;
    try {
      socket = await connect(path.join(chosen.workDir, 'serial.sock'));
    } catch (e) {
      process.stderr.write(
        `error: build "${chosen.build}" has no serial console right now: its VM is not running (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})\n`,
      );
      return 1;
    }
    process.stderr.write(
      `kiln: attached to the serial console of "${chosen.build}" (kiln pid ${chosen.pid}). Ctrl-] detaches; the VM keeps running. Press Enter for a prompt.\n`,
    );
    const how = await relay(socket, process.stdin, process.stdout);
    process.stderr.write(
      how === 'detached'
        ? `\r\nkiln: detached from "${chosen.build}"; the VM keeps running\n`
        : `\r\nkiln: the serial console of "${chosen.build}" closed: its VM stopped\n`,
    );
    return 0;
  } finally {
    rmSync(path.join(chosen.workDir, lockFile), { force: true });
  }
}
