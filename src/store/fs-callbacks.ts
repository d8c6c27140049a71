// fs's callback calls as promises, for the blob serving path. Each fs/promises call
// allocates native state (its own stats array, a FileHandle released by the garbage
// collector) that lives until the next GC, and a small blob served from disk is a stat,
// an open, a read and a close. Under 256 connections that garbage, freed in between
// longer-lived allocations, was part of what kept glibc's heap resident. The callback
// calls fill one shared stats array and leave only a plain descriptor.
import { close, open, read, stat, type Stats } from 'node:fs';

export function openForRead(path: string): Promise<number> {
  return new Promise((resolve, reject) => open(path, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
}

/** Reads up to `length` bytes at `position` into the start of `buf`. */
export function readAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, 0, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Never rejects: a descriptor that fails to close is gone either way. */
export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve) => close(fd, () => resolve()));
}

export function statFile(path: string): Promise<Stats> {
  return new Promise((resolve, reject) => stat(path, (err, st) => (err ? reject(err) : resolve(st))));
}
