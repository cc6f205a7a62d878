/** Writes a tree of small text files (a playbook with its roles, a manifest...) below `root`. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export function writeFiles(root: string, files: Record<string, string>): void {
  for (const [name, body] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    writeFileSync(path.join(root, name), body);
  }
}
