// A hold in an object store: the verified spool file stays on local disk until released,
// so that a blob removed from the bucket meanwhile (by gc or another replica's evictor)
// can be uploaded again. Spool files a crash leaves are swept at start-up like any other.
import type { HeldBlob } from '../content-store.js';
import type { SpoolFile } from '../spool.js';

export class SpoolHold implements HeldBlob {
  readonly #spool: SpoolFile;
  readonly #restore: () => Promise<string>;

  /** `restore` puts the spool back when the object is gone and returns the object's version. */
  constructor(spool: SpoolFile, restore: () => Promise<string>) {
    this.#spool = spool;
    this.#restore = restore;
  }

  read(): Promise<Buffer> {
    return this.#spool.read();
  }

  async restore(): Promise<{ version: string }> {
    return { version: await this.#restore() };
  }

  release(): Promise<void> {
    return this.#spool.discard();
  }
}
