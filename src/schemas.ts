import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The project root: the nearest folder above this file with a package.json (works from src/ and dist/src/). */
export function projectRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${__dirname}`);
    dir = up;
  }
  return dir;
}

const cache = new Map<string, Record<string, unknown>>();

/** Reads a JSON schema from schemas/ (read once per process). */
export function loadSchema(file: string): Record<string, unknown> {
  let s = cache.get(file);
  if (!s) {
    s = JSON.parse(readFileSync(join(projectRoot(), 'schemas', file), 'utf8')) as Record<string, unknown>;
    cache.set(file, s);
  }
  return s;
}
