// Named points at which crash and two-process tests stop or kill the process, so that it
// lands exactly there rather than by luck of timing.

/** REGMIRROR_CRASH_AT=publish:before-rename: the process kills itself with SIGKILL there. */
const CRASH_AT = process.env.REGMIRROR_CRASH_AT;
/**
 * REGMIRROR_STOP_AT stops the process the first time it gets there (SIGSTOP), until it
 * gets SIGCONT: another process acts meanwhile.
 */
let stopAt = process.env.REGMIRROR_STOP_AT;

export function crashPoint(name: string): void {
  if (CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
  if (stopAt === name) {
    stopAt = undefined;
    process.kill(process.pid, 'SIGSTOP');
  }
}
