// configure's error, apart from its parsers so that main.ts can tell it without loading them.

/** A mistake the operator can fix (bad flag, unreadable file): printed as one line. */
export class ConfigureError extends Error {
  /** True when the command line itself is wrong (exit status 2), not a file it met. */
  readonly usage: boolean;

  constructor(message: string, usage = false) {
    super(`configure: ${message}`);
    this.name = 'ConfigureError';
    this.usage = usage;
  }
}
