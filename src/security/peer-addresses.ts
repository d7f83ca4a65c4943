import dns from 'node:dns'
import net from 'node:net'
import { embeddedIPv4 } from './address-policy.js'

function canonical (address: string): string {
  const bare = address.startsWith('[') ? address.slice(1, -1) : address
  return (embeddedIPv4(bare) ?? bare).toLowerCase()
}

function isLoopback (address: string): boolean {
  const a = canonical(address)
  return a === '::1' || (net.isIPv4(a) && a.startsWith('127.'))
}

/**
 * Without a shared secret, the handler serves only the pool's own addresses and loopback.
 * Host names in the pool are resolved when the pool is set and again when an unknown address
 * knocks, at most once a minute, so a peer that moved is let in without a restart.
 */
export class PeerAddresses {
  readonly #trustLoopback: boolean
  #hosts: string[] = []
  #known = new Set<string>()
  #resolving: Promise<void> | undefined
  #resolvedAt = 0

  /** @param trustLoopback let loopback in without being in the pool. */
  constructor (trustLoopback = true) {
    this.#trustLoopback = trustLoopback
  }

  /** Changes whenever the pool does: a verdict remembered under an older one is void. */
  get generation (): number {
    return this.#generation
  }

  #generation = 0

  update (peers: readonly string[]): void {
    this.#generation++
    this.#hosts = peers.map((p) => new URL(p).hostname)
    this.#known = new Set()
    for (const h of this.#hosts) if (net.isIP(h.replace(/^\[|\]$/g, '')) !== 0) this.#known.add(canonical(h))
    this.#resolvedAt = 0
    this.#resolving = undefined
  }

  /**
   * The verdict on `address` when it needs no name resolution: true when it is allowed now,
   * undefined when only `allows()` can tell (it may be a pool host's new address).
   */
  allowsNow (address: string | undefined): true | undefined {
    if (address === undefined) return undefined
    if (this.#trustLoopback && isLoopback(address)) return true
    return this.#known.has(canonical(address)) ? true : undefined
  }

  /** True when `address` may use the handler. Resolves names when it must. */
  async allows (address: string | undefined): Promise<boolean> {
    if (address === undefined) return false
    if (this.allowsNow(address) === true) return true
    const a = canonical(address)
    if (Date.now() - this.#resolvedAt > 60_000) {
      this.#resolving ??= this.#resolve()
      await this.#resolving
    }
    return this.#known.has(a)
  }

  async #resolve (): Promise<void> {
    const generation = this.#generation
    const names = this.#hosts.filter((h) => net.isIP(h.replace(/^\[|\]$/g, '')) === 0)
    const found = await Promise.all(names.map((n) => dns.promises.lookup(n, { all: true }).catch(() => [])))
    // The pool changed while the names were being looked up: these are the old pool's
    // addresses, and a peer that left must not get back in through them.
    if (generation !== this.#generation) return
    for (const list of found) for (const { address } of list) this.#known.add(canonical(address))
    this.#resolvedAt = Date.now()
    this.#resolving = undefined
  }
}
