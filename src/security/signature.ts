import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

/** The request header that carries a peer's signature. */
export const AUTH_HEADER = 'forwardcache-auth'

// Bounds the replay table: at most this many signatures are remembered per window.
const MAX_REMEMBERED = 100_000

// The receiving peer's base URL is signed too, so a captured request cannot be replayed to
// any other peer of the cluster.
function mac (secret: string, method: string, url: string, audience: string, t: string, nonce: string): Buffer {
  return createHmac('sha256', secret).update(`${method}\n${url}\n${audience}\n${t}\n${nonce}`).digest()
}

/**
 * `overloaded` is this peer's own limit, not the sender's fault: the sender falls back to the
 * origin without counting it against the peer's health.
 */
export type Verdict = { ok: true } | { ok: false, reason: string, overloaded?: true }

/**
 * HMAC-SHA256 request signatures between peers: over the method, the absolute origin URL, a
 * timestamp and a nonce. Signs with the first secret and accepts any (key rotation); a
 * signature is good for `windowMs` either side of now and only once.
 */
export class Signer {
  readonly #secrets: readonly string[]
  readonly #windowMs: number
  readonly #now: () => number
  // signature -> expiry (ms): a captured request cannot be replayed within its window.
  readonly #seen = new Map<string, number>()

  constructor (secrets: readonly string[], windowMs: number, now: () => number) {
    this.#secrets = secrets
    this.#windowMs = windowMs
    this.#now = now
  }

  /** Signs a request for `audience`, the base URL of the peer that will receive it. */
  sign (method: string, url: string, audience: string): string {
    const t = String(Math.floor(this.#now() / 1000))
    const nonce = randomBytes(12).toString('base64url')
    const s = mac(this.#secrets[0] as string, method, url, audience, t, nonce).toString('base64url')
    return `v1 t=${t} n=${nonce} s=${s}`
  }

  /** Checks a request received by `audience` (this peer's own base URL). */
  verify (method: string, url: string, audience: string, header: string | undefined): Verdict {
    if (header === undefined) return { ok: false, reason: 'missing signature' }
    const m = /^v1 t=(\d{1,12}) n=([A-Za-z0-9_-]{8,64}) s=([A-Za-z0-9_-]{43})$/.exec(header)
    if (m === null) return { ok: false, reason: 'malformed signature' }
    const [, t, nonce, s] = m as unknown as [string, string, string, string]
    const now = this.#now()
    if (Math.abs(now - Number(t) * 1000) > this.#windowMs) return { ok: false, reason: 'expired signature' }
    const given = Buffer.from(s, 'base64url')
    // 43 base64url characters carry 258 bits for a 256-bit HMAC: the last character's low two
    // bits are dropped when decoding, so four spellings decode to the same signature. Only
    // the canonical one is accepted, or a captured request could be replayed three more times
    // under the other spellings, which the replay table would see as new.
    if (given.toString('base64url') !== s) return { ok: false, reason: 'malformed signature' }
    let good = false
    for (const secret of this.#secrets) {
      const expected = mac(secret, method, url, audience, t, nonce)
      // Compare every secret in constant time and do not stop early, so timing tells nothing.
      if (expected.length === given.length && timingSafeEqual(expected, given)) good = true
    }
    if (!good) return { ok: false, reason: 'bad signature' }
    this.#prune(now)
    if (this.#seen.has(s)) return { ok: false, reason: 'replayed signature' }
    if (this.#seen.size >= MAX_REMEMBERED) return { ok: false, reason: 'too many signed requests in the window', overloaded: true }
    this.#seen.set(s, now + this.#windowMs * 2)
    return { ok: true }
  }

  #prune (now: number): void {
    // Map order is insertion order, which is expiry order: stop at the first live one. A
    // signature is good up to and including windowMs either side of its time, so one first
    // seen exactly windowMs before it is still good at its expiry (2 x windowMs later): it is
    // kept through that millisecond too, or it could be replayed once then.
    for (const [sig, expiry] of this.#seen) {
      if (expiry >= now) break
      this.#seen.delete(sig)
    }
  }
}
