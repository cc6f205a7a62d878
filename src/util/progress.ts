/**
 * Progress figures as events: each task's percentages only ever rise, and at most one per whole
 * percent. A download reported per 64 KiB chunk would otherwise be thousands of events a second in
 * `--events=json`, and a bar fed a value below the last one jumps back.
 */
export function risingPercent(onProgress: (pct: number) => void): (pct: number) => void {
  let last = -1;
  return (pct) => {
    const p = Math.min(100, Math.max(0, pct));
    // A new whole percent (so 100 after 99.5 still counts).
    if (Math.floor(p) > Math.floor(last)) {
      last = p;
      onProgress(Math.round(p * 100) / 100);
    }
  };
}

/**
 * Reads `qemu-img convert -p` output ("    (12.34/100%)\r", split across chunks anywhere) and
 * reports each figure once: only text after the last complete figure is kept for the next chunk.
 */
export function qemuImgProgressReader(onProgress: (pct: number) => void): (chunk: string) => void {
  const report = risingPercent(onProgress);
  let pending = '';
  return (chunk) => {
    pending += chunk;
    let consumed = 0;
    for (const m of pending.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)) {
      report(Number(m[1]));
      consumed = m.index + m[0].length;
    }
    // An unfinished figure is at most a few dozen characters: keep that much, never more.
    pending = pending.slice(consumed).slice(-64);
  };
}
