/**
 * Offline signatures with OpenSSH's file signing (`ssh-keygen -Y sign`, SSHSIG format), namespace
 * "kiln", ed25519 keys: anyone can check them with `ssh-keygen -Y verify` and an allowed_signers file,
 * without kiln. kiln reads the key's and the signature's public parts itself (no passphrase needed) to
 * give exact errors; ssh-keygen does the cryptography.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { KilnError } from '../util/errors.js';

export const SIGNATURE_NAMESPACE = 'kiln';
export const signatureFile = (file: string) => `${file}.sig`;

export class SigningError extends KilnError {}

/** Reads SSH wire strings (uint32 length + bytes) from a buffer. */
class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  bytes(n: number): Buffer {
    if (this.at + n > this.buf.length) throw new Error('truncated');
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }
  uint32(): number {
    return this.bytes(4).readUInt32BE(0);
  }
  string(): Buffer {
    return this.bytes(this.uint32());
  }
}

const fingerprintOfBlob = (blob: Buffer) =>
  `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
const keyTypeOf = (blob: Buffer) => new Reader(blob).string().toString('latin1');

function armored(text: string, label: string): Buffer {
  const m = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`).exec(text);
  if (!m) throw new Error(`no "BEGIN ${label}" block`);
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}

/** The type, fingerprint and protection of an OpenSSH private key file, read without its passphrase. */
export function describePrivateKey(keyFile: string): { type: string; fingerprint: string; encrypted: boolean } {
  let text: string;
  try {
    text = readFileSync(keyFile, 'utf8');
  } catch (e) {
    throw new SigningError(`sign.key ${keyFile} cannot be read: ${(e as Error).message}`, {
      fix: `point sign.key at an ed25519 private key (ssh-keygen -t ed25519 -f FILE)`,
    });
  }
  try {
    const r = new Reader(armored(text, 'OPENSSH PRIVATE KEY'));
    if (r.bytes(15).toString('latin1') !== 'openssh-key-v1\0') throw new Error('not an openssh-key-v1 key');
    const cipher = r.string().toString('latin1');
    r.string();
    r.string();
    if (r.uint32() < 1) throw new Error('it holds no key');
    const pub = r.string();
    return { type: keyTypeOf(pub), fingerprint: fingerprintOfBlob(pub), encrypted: cipher !== 'none' };
  } catch (e) {
    throw new SigningError(`sign.key ${keyFile} is not an OpenSSH private key (${(e as Error).message})`, {
      fix: `make one with ssh-keygen -t ed25519 -f FILE, and point sign.key at FILE (not FILE.pub)`,
    });
  }
}

/** Checks the key can sign unattended: ed25519, no passphrase (nobody is there to type it). */
export function checkSigningKey(keyFile: string): { fingerprint: string } {
  const k = describePrivateKey(keyFile);
  if (k.type !== 'ssh-ed25519')
    throw new SigningError(`sign.key ${keyFile} is a ${k.type} key; kiln signs with ed25519 keys`, {
      fix: `make one with ssh-keygen -t ed25519 -f FILE`,
    });
  if (k.encrypted)
    throw new SigningError(`sign.key ${keyFile} is protected by a passphrase, which nobody can type during a build`, {
      fix: `use a key without a passphrase, kept where only the builder can read it (ssh-keygen -t ed25519 -N '' -f FILE)`,
    });
  return { fingerprint: k.fingerprint };
}

/** Writes `file`.sig. ssh-keygen runs in a session of its own, so it never asks the terminal for anything. */
export async function signFile(keyFile: string, file: string, signal?: AbortSignal): Promise<string> {
  const r = await execa('ssh-keygen', ['-q', '-Y', 'sign', '-f', keyFile, '-n', SIGNATURE_NAMESPACE, file], {
    reject: false,
    stdin: 'ignore',
    detached: true,
    cancelSignal: signal,
    all: true,
  });
  signal?.throwIfAborted();
  if (r.exitCode === undefined && /ENOENT/.test(String((r as { message?: string }).message))) {
    throw new SigningError('ssh-keygen was not found, and sign: needs it', {
      fix: "install OpenSSH's client tools (apt-get install openssh-client)",
    });
  }
  if (r.exitCode !== 0)
    throw new SigningError(
      `signing ${file} with sign.key ${keyFile} failed: ssh-keygen -Y sign exited ${r.exitCode}: ${String(r.all ?? '').trim()}`,
      { fix: `check that sign.key is an unencrypted ed25519 private key readable by this user` },
    );
  return signatureFile(file);
}

/** The signer's key and namespace, as an SSHSIG signature file states them. */
export function readSignature(sigFile: string): { keyType: string; fingerprint: string; namespace: string } {
  const r = new Reader(armored(readFileSync(sigFile, 'latin1'), 'SSH SIGNATURE'));
  if (r.bytes(6).toString('latin1') !== 'SSHSIG') throw new Error('not an SSHSIG signature');
  r.uint32();
  const pub = r.string();
  const namespace = r.string().toString('latin1');
  return { keyType: keyTypeOf(pub), fingerprint: fingerprintOfBlob(pub), namespace };
}

export interface SignatureCheck {
  ok: boolean;
  principal?: string;
  fingerprint?: string;
  problem?: string;
}

/**
 * Checks `sigFile` over `file` against an allowed_signers file: first whose key signed it (an unknown
 * signer is named by its key's fingerprint), then the signature itself.
 */
export async function verifySignature(allowedSigners: string, file: string, sigFile: string): Promise<SignatureCheck> {
  let sig: ReturnType<typeof readSignature>;
  try {
    sig = readSignature(sigFile);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return {
      ok: false,
      problem:
        code === 'ENOENT'
          ? `signature ${sigFile} is missing`
          : `signature ${sigFile} cannot be read (${(e as Error).message}): it was damaged or altered`,
    };
  }
  const who = `${sig.keyType} key ${sig.fingerprint}`;
  if (sig.namespace !== SIGNATURE_NAMESPACE)
    return {
      ok: false,
      fingerprint: sig.fingerprint,
      problem: `signature ${sigFile} is for namespace "${sig.namespace}", not "${SIGNATURE_NAMESPACE}"`,
    };
  const found = await execa(
    'ssh-keygen',
    ['-Y', 'find-principals', '-f', allowedSigners, '-n', SIGNATURE_NAMESPACE, '-s', sigFile],
    { reject: false, stdin: 'ignore', all: true },
  );
  const principal = found.exitCode === 0 ? String(found.stdout).split('\n')[0]!.trim() : '';
  if (!principal) {
    return {
      ok: false,
      fingerprint: sig.fingerprint,
      problem: `signed by ${who}, which ${allowedSigners} does not list (unknown signer)${/[Cc]ouldn't|No such file|not found/.test(String(found.all)) && !/No principal matched/.test(String(found.all)) ? `; ssh-keygen: ${String(found.all).trim()}` : ''}`,
    };
  }
  const checked = await execa(
    'ssh-keygen',
    ['-Y', 'verify', '-f', allowedSigners, '-I', principal, '-n', SIGNATURE_NAMESPACE, '-s', sigFile],
    { reject: false, inputFile: file, all: true },
  );
  if (checked.exitCode !== 0) {
    return {
      ok: false,
      principal,
      fingerprint: sig.fingerprint,
      problem: `the signature by ${principal} (${who}) does not match ${file}: the file or its signature changed after signing (ssh-keygen: ${String(checked.all).trim().split('\n').at(-1)})`,
    };
  }
  return { ok: true, principal, fingerprint: sig.fingerprint };
}
