/** Host ports for a VM's forwards on loopback: a free one from the kernel, or one of a pinned range. */
import net from 'node:net';
import { KilnError } from '../util/errors.js';

/** A port the kernel just handed out on loopback; QEMU binds it a moment later (retried on a clash). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Ports a user pinned for the SSH forward (`setting`: the CLI's KILN_SSH_HOST_PORTS): "2222" or "2222-2230", tried in order. */
export function pinnedSshPorts(spec: string, setting = 'KILN_SSH_HOST_PORTS'): number[] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(spec.trim());
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2] ?? m?.[1]);
  if (!m || lo < 1 || hi > 65535 || lo > hi) {
    throw new KilnError(`${setting}=${spec} is not a port or a range of ports`, {
      fix: `give one port (2222) or a range (2222-2230), or unset it to let kiln pick a free port`,
    });
  }
  return Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
}

/** Whether something already listens on `port` on loopback (or we may not bind it). */
export function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', (e: NodeJS.ErrnoException) =>
      e.code === 'EADDRINUSE' || e.code === 'EACCES' ? resolve(true) : reject(e),
    );
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
  });
}
