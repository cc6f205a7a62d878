/**
 * Everything a build reports is a typed event. The human renderer (stderr) and the JSON-lines
 * renderer (--events=json, stdout) both subscribe; steps never print directly.
 */
export type BuildEvent =
  | { type: 'build-start'; build: string; steps: string[] }
  | { type: 'step-start'; build: string; step: string; index: number }
  | { type: 'step-end'; build: string; step: string; index: number; ms: number }
  | { type: 'step-error'; build: string; step: string; index: number; error: string }
  | { type: 'cleanup'; build: string; step: string; error?: string }
  | { type: 'log'; build: string; level: 'info' | 'warn' | 'debug'; message: string }
  | { type: 'output'; build: string; stream: 'stdout' | 'stderr'; source: string; line: string }
  | { type: 'provisioner-start'; build: string; index: number; provisioner: string }
  | { type: 'provisioner-end'; build: string; index: number; provisioner: string; ms: number }
  | { type: 'progress'; build: string; task: string; percent: number }
  | { type: 'provisioner-cached'; build: string; index: number; provisioner: string; key: string }
  | { type: 'layer-saved'; build: string; index: number; key: string; size: number; ms: number }
  | { type: 'artifact'; build: string; path: string; format: string; size: number; sha256: string; reused?: boolean }
  | { type: 'build-end'; build: string; ok: boolean; ms: number; error?: string; outputDirectory?: string };

export type EventSink = (event: BuildEvent & { time: string }) => void;

/** Replaces every secret (sensitive variable value, password) in a string with "<sensitive>". */
export function maskSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s) out = out.split(s).join('<sensitive>');
  return out;
}

export class EventBus {
  private sinks: EventSink[] = [];
  constructor(private readonly secrets: string[] = []) {}

  subscribe(sink: EventSink): () => void {
    this.sinks.push(sink);
    return () => { this.sinks = this.sinks.filter((s) => s !== sink); };
  }

  addSecret(secret: string): void { if (secret && !this.secrets.includes(secret)) this.secrets.push(secret); }

  emit(event: BuildEvent): void {
    const masked = JSON.parse(maskSecrets(JSON.stringify(event), this.secrets.map((s) => JSON.stringify(s).slice(1, -1)))) as BuildEvent;
    const stamped = { ...masked, time: new Date().toISOString() };
    for (const sink of this.sinks) sink(stamped);
  }
}
