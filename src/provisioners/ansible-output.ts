/**
 * Reads ansible-playbook's default output as it streams, to say which task failed on which host and
 * what the host answered, instead of leaving the user to scroll back through the log.
 */

export interface AnsibleFailure {
  /** "role : task name" as Ansible prints it; undefined before the first task (a play-level error). */
  task?: string;
  host: string;
  /** FAILED! or UNREACHABLE! */
  kind: string;
  /** The interesting part of the host's result: msg, stderr, stdout. */
  detail: string;
}

const taskHeader = /^(?:TASK|RUNNING HANDLER) \[(.*)\] \**\s*$/;
// fatal: [default]: FAILED! => {...}      failed: [default] (item=x) => {...}      fatal: [default]: UNREACHABLE! => {...}
const failureLine = /^(?:fatal|failed): \[([^\]]+)\](?:: (FAILED!|UNREACHABLE!)| \(item=.*?\))? => (.*)$/;
const detailLimit = 2000;

/** The host's result, from the JSON Ansible prints after "=>", reduced to what explains a failure. */
export function failureDetail(json: string): string {
  let result: Record<string, unknown>;
  try {
    result = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.slice(0, detailLimit);
  }
  const parts: string[] = [];
  for (const field of ['msg', 'module_stderr', 'stderr', 'module_stdout', 'stdout']) {
    const v = result[field];
    const text = typeof v === 'string' ? v.trim() : v === undefined ? '' : JSON.stringify(v);
    if (text && !parts.some((p) => p.endsWith(text))) parts.push(field === 'msg' ? text : `${field}: ${text}`);
  }
  const out = parts.join('\n') || json;
  return out.length > detailLimit ? `${out.slice(0, detailLimit)}...` : out;
}

export class AnsibleOutput {
  private task?: string;
  readonly failures: AnsibleFailure[] = [];
  /** "ERROR! ..." lines: Ansible could not start the play (syntax, missing role, bad option). */
  readonly errors: string[] = [];

  observe(line: string): void {
    const header = taskHeader.exec(line);
    if (header) {
      this.task = header[1];
      return;
    }
    // A failure in a task with ignore_errors is followed by this line: it did not fail the play.
    if (line.trim() === '...ignoring') {
      this.failures.pop();
      return;
    }
    const failed = failureLine.exec(line);
    if (failed) {
      this.failures.push({
        task: this.task,
        host: failed[1]!,
        kind: failed[2] ?? 'FAILED!',
        detail: failureDetail(failed[3]!),
      });
      return;
    }
    if (line.startsWith('ERROR! ')) this.errors.push(line.slice('ERROR! '.length));
    else if (this.errors.length && line.trim() && this.errors.length < 10) this.errors.push(line);
  }

  /** What went wrong, for the build's error message; undefined when the output gave no clue. */
  explain(): string | undefined {
    if (this.failures.length) {
      return this.failures
        .map((f) => {
          const what = f.kind === 'UNREACHABLE!' ? `host ${f.host} was unreachable` : `failed on ${f.host}`;
          const body = f.detail
            .split('\n')
            .map((l) => `    ${l}`)
            .join('\n');
          return `  task "${f.task ?? '(before any task)'}" ${what}:\n${body}`;
        })
        .join('\n');
    }
    if (this.errors.length) return this.errors.map((l) => `  ${l}`).join('\n');
    return undefined;
  }
}

/** ansible-playbook's exit codes, in words. */
export function ansibleExitMeaning(code: number): string {
  switch (code) {
    case 1:
      return 'error';
    case 2:
      return 'a task failed';
    case 4:
      return 'a host was unreachable, or the playbook could not be parsed';
    case 5:
      return 'bad or incomplete options';
    case 8:
      return 'a play was aborted';
    case 99:
      return 'interrupted';
    default:
      return 'unexpected error';
  }
}
