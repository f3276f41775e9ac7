/** A token bucket per connection: `burst` requests at once, refilled at `perSec`. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSec: number,
    private readonly burst: number,
    now = Date.now(),
  ) {
    this.tokens = burst;
    this.last = now;
  }

  take(now = Date.now()): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.perSec) / 1000);
      this.last = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
