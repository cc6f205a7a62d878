/**
 * A guest that stops because its CPU lacks features says so on its console, then never answers SSH:
 * Linux's boot code ("This kernel requires the following features not present on the CPU"), glibc 2.33+
 * ("CPU does not support x86-64-v3", "CPU ISA level is lower than required"). Found in the console, it
 * becomes the cause of a failed wait, with the fix, instead of a bare SSH timeout.
 */

const signs: { pattern: RegExp; level?: (m: RegExpExecArray) => string }[] = [
  { pattern: /CPU does not support (x86-64-v\d)/, level: (m) => m[1]! },
  { pattern: /CPU ISA level is lower than required/ },
  {
    pattern: /This kernel requires the following features not present on the CPU:?\s*([^\n]*)/,
    level: (m) => (m[1]?.trim() ? `the features ${m[1].trim()}` : 'more CPU features'),
  },
  { pattern: /This kernel requires an? (\S+) CPU/, level: (m) => `an ${m[1]} CPU` },
];

/**
 * Why the guest stopped, if its console shows a CPU it cannot run on, with the fix; `cpuModel` is the -cpu
 * it ran with. undefined when the console shows no such message.
 */
export function cpuTooSmallCause(consoleText: string, cpuModel: string | undefined): string | undefined {
  for (const { pattern, level } of signs) {
    const m = pattern.exec(consoleText);
    if (!m) continue;
    const line = consoleText
      .slice(consoleText.lastIndexOf('\n', m.index) + 1)
      .split('\n')[0]!
      .trim();
    const needs = level ? level(m) : 'a newer x86-64 level';
    return (
      `the guest needs ${needs}, which its CPU model${cpuModel ? ` "${cpuModel}"` : ''} does not offer (its console: "${line}")` +
      '\n  fix: set cpu_model: max in the source (under TCG it offers x86-64-v3: AVX2, BMI1/2, FMA, MOVBE), or a named model that has what the guest needs (qemu-system-x86_64 -cpu help)'
    );
  }
  return undefined;
}
