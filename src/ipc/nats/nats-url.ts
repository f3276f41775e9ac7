/**
 * NATS_URL: one or more comma-separated `nats://host:port` (or `tls://`) URLs; no user
 * info or path. Throws a RangeError that names the bad one.
 */
export function parseNatsUrls(text: string): string[] {
  const parts = text.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (parts.length === 0) throw new RangeError('NATS_URL is empty');
  return parts.map((p) => {
    let u: URL;
    try {
      u = new URL(p);
    } catch {
      throw new RangeError(`${JSON.stringify(p)} is not a URL (nats://host:4222)`);
    }
    if (u.protocol !== 'nats:' && u.protocol !== 'tls:') throw new RangeError(`${JSON.stringify(p)}: the scheme must be nats:// or tls://`);
    if (!u.hostname) throw new RangeError(`${JSON.stringify(p)}: no host`);
    if (u.username || u.password) throw new RangeError(`${JSON.stringify(p)}: credentials in the URL are not accepted`);
    if ((u.pathname && u.pathname !== '/') || u.search || u.hash) throw new RangeError(`${JSON.stringify(p)}: no path, query or fragment`);
    return `${u.protocol}//${u.host}`;
  });
}
