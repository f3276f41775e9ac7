/**
 * Incremental decoder for the client framing of PROTOCOL.md: a 4-byte unsigned big-endian
 * length L, then L bytes of UTF-8 JSON encoding one object. Pure: bytes in, objects out.
 */

export const DEFAULT_MAX_FRAME_BYTES = 8192;
const HEADER_BYTES = 4;
const MAX_UINT32 = 0xffff_ffff;

/** A malformed frame. The connection that sent it is to be closed after an error push. */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  readonly code = 'BAD_FRAME' as const;
  /**
   * Objects decoded by the same push() before the bad frame: the caller may still serve
   * them before closing, since they arrived first and were well formed.
   */
  readonly decoded: readonly unknown[];
  constructor(message: string, decoded: readonly unknown[] = []) {
    super(message);
    this.decoded = decoded;
  }
}

export class FrameDecoder {
  readonly maxFrameBytes: number;
  // Chunks are kept as a list and joined once per frame, so a big frame that arrives in
  // many small chunks costs O(n), not O(n^2) as with concat-on-every-push.
  private chunks: Buffer[] = [];
  private queued = 0;
  /** Body length of the frame in progress once its header is read, else -1. */
  private bodyLength = -1;
  private failure: FrameError | null = null;
  // One decoder reused across frames; `fatal` turns bad UTF-8 into an exception instead
  // of silently substituting U+FFFD.
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true });

  constructor(maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1 || maxFrameBytes > MAX_UINT32) {
      throw new RangeError(`maxFrameBytes must be an integer from 1 to ${MAX_UINT32}, got ${maxFrameBytes}`);
    }
    this.maxFrameBytes = maxFrameBytes;
  }

  /** Bytes of the incomplete frame received so far (header included). */
  get bufferedBytes(): number {
    return this.queued + (this.bodyLength >= 0 ? HEADER_BYTES : 0);
  }

  /** True once a bad frame was seen; every later push() throws the same error. */
  get failed(): boolean {
    return this.failure !== null;
  }

  /**
   * Feeds bytes; returns every object completed by them, in order. Throws FrameError.
   * Chunks are kept by reference until their frame completes: do not reuse them.
   */
  push(chunk: Buffer): unknown[] {
    this.append(chunk);
    return this.next(Infinity);
  }

  /** Keeps bytes for next() without decoding anything yet. Throws FrameError after a failure. */
  append(chunk: Buffer): void {
    if (this.failure) throw new FrameError(this.failure.message);
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.queued += chunk.length;
    }
  }

  /**
   * Decodes up to `max` complete frames from what was appended (the rest stays buffered, as
   * bytes: a caller that serves frames in bounded batches holds no decoded backlog).
   * Throws FrameError, whose `decoded` holds the frames of this call before the bad one.
   */
  next(max: number): unknown[] {
    if (this.failure) throw new FrameError(this.failure.message);
    const out: unknown[] = [];
    while (out.length < max) {
      if (this.bodyLength < 0) {
        if (this.queued < HEADER_BYTES) break;
        const length = this.take(HEADER_BYTES).readUInt32BE(0);
        // Checked before any body byte is awaited, so a hostile length costs nothing.
        if (length === 0) this.fail('frame length is 0', out);
        if (length > this.maxFrameBytes) {
          this.fail(`frame length ${length} exceeds the limit of ${this.maxFrameBytes} bytes`, out);
        }
        this.bodyLength = length;
      }
      if (this.queued < this.bodyLength) break;
      const body = this.take(this.bodyLength);
      this.bodyLength = -1;
      out.push(this.parse(body, out));
    }
    return out;
  }

  /** True when a whole frame (or a bad header) waits to be taken by next(). */
  get hasFrame(): boolean {
    if (this.failure) return false;
    if (this.bodyLength >= 0) return this.queued >= this.bodyLength;
    if (this.queued < HEADER_BYTES) return false;
    const first = this.chunks[0]!;
    const length = first.length >= HEADER_BYTES ? first.readUInt32BE(0) : Buffer.concat(this.chunks.slice(0, HEADER_BYTES)).readUInt32BE(0);
    return length === 0 || length > this.maxFrameBytes || this.queued >= HEADER_BYTES + length;
  }

  private parse(body: Buffer, decoded: unknown[]): unknown {
    let text: string;
    try {
      text = this.utf8.decode(body);
    } catch {
      this.fail('frame is not valid UTF-8', decoded);
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      this.fail('frame is not valid JSON', decoded);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
      this.fail(`frame must hold a JSON object, got ${kind}`, decoded);
    }
    return value;
  }

  /** Removes exactly n bytes (n <= queued) from the front of the queue. */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      // Common case: no copy, just a view.
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.queued -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let used = 0;
    while (filled < n) {
      const c = this.chunks[used]!;
      const want = n - filled;
      if (c.length <= want) {
        c.copy(out, filled);
        filled += c.length;
        used++;
      } else {
        c.copy(out, filled, 0, want);
        this.chunks[used] = c.subarray(want);
        filled = n;
      }
    }
    // One splice per frame rather than one shift per chunk.
    this.chunks.splice(0, used);
    this.queued -= n;
    return out;
  }

  private fail(message: string, decoded: unknown[]): never {
    this.failure = new FrameError(message, decoded);
    // Drop buffered bytes: nothing after a bad frame is ever decoded.
    this.chunks = [];
    this.queued = 0;
    this.bodyLength = -1;
    throw this.failure;
  }
}
