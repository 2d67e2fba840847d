// The one source of randomness of a simulation run. Every choice a run makes (latencies,
// losses, crashes, identities, job ids, step durations) is drawn from one Prng seeded with
// a 32-bit seed, so the seed alone reproduces the run bit for bit.
//
// Generator: xoshiro128** (Blackman and Vigna), state seeded by splitmix32 from the seed.
// It is fast, has a 2^128 - 1 period and passes BigCrush; quality well beyond what fault
// injection needs. Never use Math.random in sim/: it cannot be replayed.

/** splitmix32: expands one 32-bit seed into a stream of well-mixed 32-bit words. */
export function splitmix32(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
}

export class Prng {
  private a: number
  private b: number
  private c: number
  private d: number
  /** Number of 32-bit words drawn so far: part of the trace, a cheap divergence detector. */
  draws = 0

  constructor(readonly seed: number) {
    const sm = splitmix32(seed)
    this.a = sm(); this.b = sm(); this.c = sm(); this.d = sm()
    if ((this.a | this.b | this.c | this.d) === 0) this.d = 1
  }

  /** Uniform 32-bit unsigned integer. */
  next32(): number {
    this.draws++
    const result = Math.imul(rotl(Math.imul(this.b, 5) >>> 0, 7), 9) >>> 0
    const t = (this.b << 9) >>> 0
    this.c ^= this.a
    this.d ^= this.b
    this.b ^= this.c
    this.a ^= this.d
    this.c ^= t
    this.d = rotl(this.d, 11)
    this.a >>>= 0; this.b >>>= 0; this.c >>>= 0; this.d >>>= 0
    return result
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  float(): number {
    return this.next32() / 4294967296
  }

  /** Uniform integer in [0, n). n must be a positive integer below 2^32. */
  int(n: number): number {
    if (!(n > 0)) throw new Error(`Prng.int: n must be positive, got ${n}`)
    return Math.floor(this.float() * n)
  }

  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.float()
  }

  chance(p: number): boolean {
    return p > 0 && this.float() < p
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('Prng.pick: empty list')
    return items[this.int(items.length)]!
  }

  /** Exponential with the given mean. */
  exp(mean: number): number {
    return -mean * Math.log(1 - this.float())
  }

  /** Log-normal with the given median and shape sigma (Box-Muller on two draws). */
  logNormal(median: number, sigma: number): number {
    const u1 = 1 - this.float()
    const u2 = this.float()
    const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2)
    return median * Math.exp(sigma * z)
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i += 4) {
      const w = this.next32()
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (w >>> (8 * j)) & 0xff
    }
    return out
  }

  /** A version-4-shaped UUID drawn from this generator (used for job ids). */
  uuid(): string {
    const b = this.bytes(16)
    b[6] = (b[6]! & 0x0f) | 0x40
    b[8] = (b[8]! & 0x3f) | 0x80
    const x = Buffer.from(b).toString('hex')
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`
  }

  /** Fisher-Yates, in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const t = items[i]!
      items[i] = items[j]!
      items[j] = t
    }
    return items
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}
