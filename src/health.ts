/** What the health tracker needs from its owner. */
export interface HealthOptions {
  /** Consecutive failures that eject a peer from routing. */
  ejectAfter: number
  /** First wait before probing an ejected peer, ms; doubles after each failed probe. */
  backoff: number
  /** Longest wait between probes, ms. */
  maxBackoff: number
  /** Resolves true when the peer answers like a forwardcache peer. Never rejects. */
  probe: (peer: string) => Promise<boolean>
  /** Runs whenever the set of ejected peers changes. */
  onChange: () => void
  /** Runs when a probe readmits `peer`, before onChange. */
  onReadmitted?: ((peer: string) => void) | undefined
}

interface State {
  failures: number
  ejected: boolean
  backoff: number
  timer: NodeJS.Timeout | undefined
}

/**
 * Tracks which peers are failing. A peer that fails `ejectAfter` times in a row is taken out
 * of routing (its keys move to the others, and only its keys); it is probed with growing
 * backoff and readmitted after the first successful probe.
 */
export class PeerHealth {
  readonly #o: HealthOptions
  readonly #state = new Map<string, State>()
  #closed = false

  constructor (options: HealthOptions) {
    this.#o = options
  }

  /** Peers currently out of routing. */
  ejected (): Set<string> {
    const out = new Set<string>()
    for (const [peer, s] of this.#state) if (s.ejected) out.add(peer)
    return out
  }

  /** True while `peer` is out of routing (and probed). */
  isEjected (peer: string): boolean {
    return this.#state.get(peer)?.ejected === true
  }

  success (peer: string): void {
    const s = this.#state.get(peer)
    if (s !== undefined && !s.ejected) this.#state.delete(peer)
  }

  failure (peer: string): void {
    if (this.#closed) return
    let s = this.#state.get(peer)
    if (s === undefined) {
      s = { failures: 0, ejected: false, backoff: this.#o.backoff, timer: undefined }
      this.#state.set(peer, s)
    }
    if (s.ejected) return
    s.failures++
    if (s.failures >= this.#o.ejectAfter) {
      s.ejected = true
      this.#schedule(peer, s)
      this.#o.onChange()
    }
  }

  #schedule (peer: string, s: State): void {
    s.timer = setTimeout(() => {
      s.timer = undefined
      this.#o.probe(peer).then((ok) => {
        if (this.#closed || this.#state.get(peer) !== s) return
        if (ok) {
          this.#state.delete(peer)
          this.#o.onReadmitted?.(peer)
          this.#o.onChange()
        } else {
          s.backoff = Math.min(s.backoff * 2, this.#o.maxBackoff)
          this.#schedule(peer, s)
        }
      }, () => {})
    }, s.backoff)
    // Probing must never keep a process alive on its own.
    s.timer.unref()
  }

  /** Forgets peers that left the pool. */
  retain (peers: ReadonlySet<string>): void {
    for (const [peer, s] of this.#state) {
      if (peers.has(peer)) continue
      if (s.timer !== undefined) clearTimeout(s.timer)
      this.#state.delete(peer)
    }
  }

  close (): void {
    this.#closed = true
    for (const s of this.#state.values()) if (s.timer !== undefined) clearTimeout(s.timer)
    this.#state.clear()
  }
}
