/** SSH key pairs kiln makes per build (client key, and a host key it injects and then verifies). */
import { createHash } from 'node:crypto';
import ssh2 from 'ssh2';

export interface KeyPair {
  privateKey: string;
  publicKey: string;
  fingerprint: string;
}

/** "SHA256:<base64, no padding>" of a public key, as `ssh-keygen -lf` prints it. */
export function fingerprintOf(publicKey: string | Buffer): string {
  const blob =
    typeof publicKey === 'string' ? Buffer.from(publicKey.trim().split(/\s+/)[1] ?? '', 'base64') : publicKey;
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

export function generateKeyPair(comment: string): KeyPair {
  const k = ssh2.utils.generateKeyPairSync('ed25519', { comment });
  const publicKey = k.public.trim();
  return { privateKey: k.private, publicKey, fingerprint: fingerprintOf(publicKey) };
}

/** The public key (OpenSSH one-line form) of a private key file's contents. */
export function publicKeyOf(privateKey: string | Buffer, passphrase?: string): string {
  const parsed = ssh2.utils.parseKey(privateKey, passphrase);
  if (parsed instanceof Error) throw parsed;
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  return `${key.type} ${key.getPublicSSH().toString('base64')}`;
}
