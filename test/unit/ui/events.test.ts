import { describe, expect, it } from 'vitest';
import { EventBus, maskSecrets, type BuildEvent } from '../../../src/ui/events.js';

describe('secret masking', () => {
  it('masks every occurrence', () => {
    expect(maskSecrets('pw=hunter22 again hunter22', ['hunter22'])).toBe('pw=<sensitive> again <sensitive>');
  });
  it('masks secrets in every event, including multi-line keys added later', () => {
    const bus = new EventBus(['s3cr3t']);
    const seen: BuildEvent[] = [];
    bus.subscribe((e) => seen.push(e));
    const key = '-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n';
    bus.addSecret(key);
    bus.emit({ type: 'log', build: 'b', level: 'info', message: `token s3cr3t and ${key}` });
    bus.emit({ type: 'output', build: 'b', stream: 'stdout', source: 'p1', line: 'echo s3cr3t' });
    expect(JSON.stringify(seen)).not.toContain('s3cr3t');
    expect(JSON.stringify(seen)).not.toContain('abc');
    expect((seen[0] as { message: string }).message).toBe('token <sensitive> and <sensitive>');
  });
});
