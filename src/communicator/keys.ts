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

/**
 * A fresh ed25519 pair in OpenSSH form. ssh2's generator writes a private key its own parser rejects
 * ("Malformed OpenSSH private key") about once in 170 (17 of 3000 measured here): a build using such a
 * key fails to log in or to serve its host key. Each key is parsed back before use and a rejected one
 * replaced; eight rejections in a row would mean the generator itself is broken, and that is an error.
 */
export function generateKeyPair(comment: string): KeyPair {
  for (let attempt = 0; attempt < 8; attempt++) {
    const k = ssh2.utils.generateKeyPairSync('ed25519', { comment });
    if (ssh2.utils.parseKey(k.private) instanceof Error) continue;
    const publicKey = k.public.trim();
    return { privateKey: k.private, publicKey, fingerprint: fingerprintOf(publicKey) };
  }
  throw new Error(
    'ssh2 generated 8 ed25519 private keys in a row that it cannot parse back: the ssh2 package is broken',
  );
}

/** The public key (OpenSSH one-line form) of a private key file's contents. */
export function publicKeyOf(privateKey: string | Buffer, passphrase?: string): string {
  const parsed = ssh2.utils.parseKey(privateKey, passphrase);
  if (parsed instanceof Error) throw parsed;
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  return `${key.type} ${key.getPublicSSH().toString('base64')}`;
}
