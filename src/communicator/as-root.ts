/** Running a command as root over a session that logged in as `username`. */

/** Commands run as the SSH user get sudo when that user is not root (sudo -n: nobody can answer a password prompt). */
export function asRoot(username: string, command: string): string {
  return username === 'root' ? command : `sudo -n sh -c '${command.replaceAll("'", `'\\''`)}'`;
}
