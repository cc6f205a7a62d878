/** Renderers for build events: human lines on stderr, or JSON lines on stdout for machines. */
import type { BuildEvent, EventSink } from './events.js';
import cliProgress from 'cli-progress';
import { formatDuration, formatBytes } from '../template/units.js';

export type ProgressMode = 'auto' | 'always' | 'never';

export interface HumanOptions {
  timestamps?: boolean;
  debug?: boolean;
  stream?: NodeJS.WritableStream;
  progress?: ProgressMode;
}

export function humanRenderer(opts: HumanOptions = {}): EventSink {
  const out = opts.stream ?? process.stderr;
  const tty = Boolean((out as NodeJS.WriteStream).isTTY);
  const color = tty && !process.env.NO_COLOR;
  const paint = (code: number, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
  const lastProgress = new Map<string, number>();
  const mode = opts.progress ?? 'auto';
  // Bars need a terminal to redraw on; elsewhere (CI logs, pipes) plain lines every 25% read better.
  const bars = mode === 'always' || (mode === 'auto' && tty) ? new ProgressBars(out) : undefined;
  return (e) => {
    const prefix = (opts.timestamps ? `${e.time} ` : '') + paint(36, `${e.build}: `);
    if (e.type === 'progress' && mode === 'never') return;
    if (e.type === 'progress' && bars) {
      bars.update(`${e.build}: ${e.task}`, e.percent);
      return;
    }
    if (e.type === 'transfer-progress' && mode === 'never') return;
    if (e.type === 'transfer-progress' && bars) {
      if (e.total)
        bars.update(`${e.build}: ${e.direction} ${e.path} (${formatBytes(e.total)})`, (100 * e.done) / e.total);
      return;
    }
    const line = lineFor(e, paint, lastProgress, opts.debug ?? false);
    if (line === undefined) return;
    const text = line
      .split('\n')
      .map((l) => prefix + l)
      .join('\n');
    // The bars stop before the last line: cli-progress would only buffer it until a redraw that never comes.
    if (e.type === 'build-end') bars?.stopAll();
    if (bars?.active) bars.log(text);
    else out.write(text + '\n');
  };
}

/** cli-progress bars, one per task, kept below the log lines. */
class ProgressBars {
  private multi?: cliProgress.MultiBar;
  private bars = new Map<string, cliProgress.SingleBar>();
  constructor(private readonly stream: NodeJS.WritableStream) {}
  get active(): boolean {
    return this.bars.size > 0;
  }

  update(task: string, percent: number): void {
    this.multi ??= new cliProgress.MultiBar(
      {
        stream: this.stream as NodeJS.WriteStream,
        format: ' {bar} {percentage}% | {task}',
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        noTTYOutput: true,
        notTTYSchedule: 2000,
      },
      cliProgress.Presets.shades_classic,
    );
    let bar = this.bars.get(task);
    if (!bar) {
      bar = this.multi.create(100, 0, { task });
      this.bars.set(task, bar);
    }
    bar.update(Math.floor(percent), { task });
  }

  log(text: string): void {
    this.multi?.log(`${text}\n`);
  }

  stopAll(): void {
    // A redraw writes out the lines log() buffered since the last one.
    this.multi?.update();
    this.multi?.stop();
    this.multi = undefined;
    this.bars.clear();
  }
}

function lineFor(
  e: BuildEvent,
  paint: (c: number, s: string) => string,
  lastProgress: Map<string, number>,
  debug: boolean,
): string | undefined {
  switch (e.type) {
    case 'build-start':
      return `build starting (${e.steps.length} steps)`;
    case 'step-start':
      return debug ? `[${e.index + 1}] ${e.step}...` : undefined;
    case 'step-end':
      return debug ? `[${e.index + 1}] ${e.step} done in ${formatDuration(e.ms)}` : undefined;
    case 'step-error':
      return paint(31, `${e.step} failed: ${e.error}`);
    case 'cleanup':
      return e.error
        ? paint(33, `cleanup of ${e.step} failed: ${e.error}`)
        : debug
          ? `cleaned up ${e.step}`
          : undefined;
    case 'log':
      if (e.level === 'debug' && !debug) return undefined;
      return e.level === 'warn' ? paint(33, `warning: ${e.message}`) : e.message;
    case 'output':
      return `${paint(2, e.source + ':')} ${e.line}`;
    case 'provisioner-start':
      return `provisioner ${e.index + 1}: ${e.provisioner}`;
    case 'provisioner-cached':
      return debug ? `provisioner ${e.index + 1}: ${e.provisioner} (cached, layer ${e.key.slice(0, 12)})` : undefined;
    case 'layer-saved':
      return debug
        ? `${e.final ? 'final disk (cleaned, trimmed)' : `provisioner ${e.index + 1}`} saved as layer ${e.key.slice(0, 12)} (${formatBytes(e.size)}, ${formatDuration(e.ms)})`
        : undefined;
    case 'layer-capture':
      return debug
        ? `layer capture: ${e.layers} layer${e.layers === 1 ? '' : 's'} saved in ${formatDuration(e.ms)} in the background; the build waited ${formatDuration(e.waitedMs)} of it at the end`
        : undefined;
    case 'vm-state-saved':
      return debug
        ? `provisioner ${e.index + 1}: VM state saved with layer ${e.key.slice(0, 12)} (${formatBytes(e.size)}, guest paused ${formatDuration(e.pausedMs)})`
        : undefined;
    case 'vm-restored':
      return undefined; // the launch step's log line says it
    case 'provisioner-end':
      return debug ? `provisioner ${e.index + 1} done in ${formatDuration(e.ms)}` : undefined;
    case 'progress': {
      // Plain periodic lines (every 25%) rather than a bar: readable in CI logs and on a TTY alike.
      const step = Math.floor(e.percent / 25);
      if ((lastProgress.get(e.task) ?? -1) >= step) return undefined;
      lastProgress.set(e.task, step);
      return `${e.task}: ${Math.floor(e.percent)}%`;
    }
    case 'transfer-progress': {
      // As 'progress': a line per quarter; a transfer of unknown size shows only in the provisioner's end line.
      if (!e.total) return undefined;
      const task = `${e.direction} ${e.path}`;
      const step = Math.floor((4 * e.done) / e.total);
      if ((lastProgress.get(task) ?? -1) >= step) return undefined;
      lastProgress.set(task, step);
      return `${task}: ${Math.floor((100 * e.done) / e.total)}% (${formatBytes(e.done)} of ${formatBytes(e.total)})`;
    }
    case 'artifact':
      return paint(
        32,
        `artifact ${e.path} (${e.reused ? 'unchanged, ' : ''}${e.format}, ${formatBytes(e.size)}, sha256 ${e.sha256.slice(0, 16)}...)`,
      );
    case 'published':
      return e.ok
        ? paint(
            32,
            `published ${e.target}: ${e.location ?? ''}${e.id && e.id !== e.location ? ` (${e.id})` : ''}${e.unchanged ? ', already there' : `, ${formatBytes(e.bytesSent ?? 0)} sent`}${e.ms !== undefined ? ` in ${formatDuration(e.ms)}` : ''}`,
          )
        : paint(31, `publish ${e.target} failed: ${e.error ?? 'unknown error'}`);
    case 'build-end':
      return e.ok
        ? paint(32, `build finished in ${formatDuration(e.ms)}${e.outputDirectory ? `: ${e.outputDirectory}` : ''}`)
        : paint(31, `build failed after ${formatDuration(e.ms)}: ${e.error ?? 'unknown error'}`);
  }
}

export function jsonRenderer(stream: NodeJS.WritableStream = process.stdout): EventSink {
  return (e) => {
    stream.write(JSON.stringify(e) + '\n');
  };
}
