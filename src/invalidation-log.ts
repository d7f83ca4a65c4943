/** What a peer that has come back to the pool missed while it was out. */
export interface Missed {
  /** URLs (cache keys) invalidated while it was out, oldest first, each once. Read only: peers back together share it. */
  readonly keys: readonly string[]
  /** False when the log no longer reaches back to when it left: some were forgotten. */
  readonly complete: boolean
}

/**
 * The sender's side of pool-wide invalidation for peers that were not in the pool when it
 * happened. A DELETE goes to the peers in the pool at that moment; one that was out of it (a
 * DNS answer without it, a setPeers() that dropped it) cannot know what it missed, so the
 * peer that sent the DELETEs keeps them, and sends them again when that peer comes back.
 *
 * Nothing is logged while every peer that ever left has come back: a pool that does not
 * change pays nothing, and a hit never gets here at all.
 */
export class InvalidationLog {
  readonly #maxKeys: number
  readonly #maxChars: number
  readonly #maxDeparted: number
  #sequence = 0
  // Key -> sequence of its latest invalidation; a key invalidated again moves to the end, so
  // the map's order is sequence order and the first entry is the oldest.
  readonly #log = new Map<string, number>()
  #chars = 0
  // The sequence of the newest entry forgotten to stay within the bounds.
  #forgottenUpTo = 0
  // Peer -> the sequence when it left, in order of leaving.
  readonly #departed = new Map<string, number>()
  // The keys handed to the last peer back, while nothing has been added since: peers that
  // left and came back together (one DNS answer) share one array instead of one each.
  #lastSince = -1
  #lastAt = -1
  #lastKeys: string[] = []

  /**
   * @param maxKeys URLs remembered
   * @param maxChars characters of URL remembered, all together
   * @param maxDeparted peers whose leaving is remembered
   */
  constructor (maxKeys: number, maxChars: number, maxDeparted: number) {
    this.#maxKeys = maxKeys
    this.#maxChars = maxChars
    this.#maxDeparted = maxDeparted
  }

  /** True while some peer that left may come back: only then is add() needed. */
  get active (): boolean {
    return this.#departed.size > 0
  }

  /** URLs remembered now. */
  get size (): number {
    return this.#log.size
  }

  /** Peers whose leaving is remembered now. */
  get departed (): number {
    return this.#departed.size
  }

  /** Notes that `key` was invalidated on the peers in the pool now. */
  add (key: string): void {
    const seq = ++this.#sequence
    const previous = this.#log.get(key)
    if (previous !== undefined) {
      this.#log.delete(key)
      this.#chars -= key.length
    }
    this.#log.set(key, seq)
    this.#chars += key.length
    while (this.#log.size > this.#maxKeys || this.#chars > this.#maxChars) {
      const [oldestKey, oldest] = this.#log.entries().next().value as [string, number]
      this.#log.delete(oldestKey)
      this.#chars -= oldestKey.length
      this.#forgottenUpTo = oldest
    }
  }

  /** Notes that `peer` has left the pool: what is invalidated from now on, it misses. */
  left (peer: string): void {
    this.#departed.delete(peer)
    this.#departed.set(peer, this.#sequence)
    if (this.#departed.size > this.#maxDeparted) {
      // The peer that left longest ago: most likely one that is gone for good (a replaced
      // pod's address). Should it come back, it is taken for a new peer.
      const first = this.#departed.keys().next().value as string
      this.#departed.delete(first)
      this.#trim()
    }
  }

  /**
   * What `peer`, back in the pool, missed while it was out; undefined when its leaving is
   * not remembered (a new peer, or one that left before maxDeparted others did).
   */
  rejoined (peer: string): Missed | undefined {
    const since = this.#departed.get(peer)
    if (since === undefined) return undefined
    this.#departed.delete(peer)
    let keys = this.#lastKeys
    if (since !== this.#lastSince || this.#lastAt !== this.#sequence) {
      keys = []
      for (const [key, seq] of this.#log) if (seq > since) keys.push(key)
      this.#lastSince = since
      this.#lastAt = this.#sequence
      this.#lastKeys = keys
    }
    const complete = this.#forgottenUpTo <= since
    this.#trim()
    return { keys, complete }
  }

  /**
   * Drops what no peer still out of the pool needs: entries from before the earliest leaving
   * remembered (all of them when none is). Sequences go on from where they were, so a peer
   * that leaves later is not taken for one that missed what is dropped here.
   */
  #trim (): void {
    const earliest = this.#departed.size === 0 ? this.#sequence : this.#departed.values().next().value as number
    if (earliest >= this.#sequence) {
      this.#log.clear()
      this.#chars = 0
      // No peer out now left before the last invalidation, so none can share the keys handed
      // out last: kept, they would hold up to the whole log's URLs after the log is freed.
      this.#lastKeys = []
      this.#lastSince = -1
    } else {
      for (const [key, seq] of this.#log) {
        if (seq > earliest) break
        this.#log.delete(key)
        this.#chars -= key.length
      }
    }
    if (earliest > this.#forgottenUpTo) this.#forgottenUpTo = earliest
  }
}

/**
 * Invalidations that failed to reach a peer in the pool (refused, reset, timed out, or not
 * answered 2xx), kept to be sent again when that peer is next seen to answer. One budget for
 * every peer, as the log's: a URL that failed to several peers is kept once.
 *
 * Nothing is kept while every DELETE succeeds.
 */
export class Undelivered {
  readonly #maxKeys: number
  readonly #maxChars: number
  #sequence = 0
  // Key -> (peer -> sequence of the failure that put it there); a key that fails again moves
  // to the end, so the first entry is the oldest.
  readonly #keys = new Map<string, Map<string, number>>()
  #chars = 0
  // Peer -> keys it is owed, and whether some were forgotten since it last owed nothing.
  readonly #peers = new Map<string, { count: number, gap: boolean }>()

  /**
   * @param maxKeys URLs remembered, for all peers together
   * @param maxChars characters of URL remembered, all together
   */
  constructor (maxKeys: number, maxChars: number) {
    this.#maxKeys = maxKeys
    this.#maxChars = maxChars
  }

  /** URLs remembered now. */
  get size (): number {
    return this.#keys.size
  }

  /** True when `peer` is owed something. */
  has (peer: string): boolean {
    return this.#peers.has(peer)
  }

  /** URLs `peer` is owed now. */
  count (peer: string): number {
    return this.#peers.get(peer)?.count ?? 0
  }

  /**
   * Notes that the DELETE of `key` failed to reach `peer`. Returns the number of peers that,
   * to stay within the bounds, have just lost an invalidation for the first time since they
   * last owed nothing (a gap each).
   */
  add (peer: string, key: string): number {
    let peers = this.#keys.get(key)
    if (peers !== undefined) {
      this.#keys.delete(key)
      this.#chars -= key.length
    } else {
      peers = new Map()
    }
    if (!peers.has(peer)) {
      const owed = this.#peers.get(peer)
      if (owed === undefined) this.#peers.set(peer, { count: 1, gap: false })
      else owed.count++
    }
    peers.set(peer, ++this.#sequence)
    this.#keys.set(key, peers)
    this.#chars += key.length
    let gaps = 0
    while (this.#keys.size > this.#maxKeys || this.#chars > this.#maxChars) {
      const [oldestKey, oldest] = this.#keys.entries().next().value as [string, Map<string, number>]
      this.#keys.delete(oldestKey)
      this.#chars -= oldestKey.length
      for (const p of oldest.keys()) {
        const owed = this.#peers.get(p)
        if (owed === undefined) continue
        if (!owed.gap) {
          owed.gap = true
          gaps++
        }
        if (--owed.count === 0) this.#peers.delete(p)
      }
    }
    return gaps
  }

  /** What `peer` is owed, oldest first, each with the sequence delivered() needs. */
  owed (peer: string): Array<[string, number]> {
    const out: Array<[string, number]> = []
    if (!this.#peers.has(peer)) return out
    for (const [key, peers] of this.#keys) {
      const seq = peers.get(peer)
      if (seq !== undefined) out.push([key, seq])
    }
    return out
  }

  /**
   * Notes that `peer` acknowledged the DELETE of `key` sent for the failure `seq`. A failure
   * since (a later invalidation of the same URL) keeps it owed.
   */
  delivered (peer: string, key: string, seq: number): void {
    const peers = this.#keys.get(key)
    if (peers?.get(peer) !== seq) return
    this.#drop(peer, key, peers)
  }

  /** Forgets what `peer` is owed (it has left the pool) and returns it, oldest first. */
  take (peer: string): string[] {
    const out: string[] = []
    if (!this.#peers.has(peer)) return out
    for (const [key, peers] of this.#keys) {
      if (!peers.has(peer)) continue
      out.push(key)
      this.#drop(peer, key, peers)
    }
    return out
  }

  #drop (peer: string, key: string, peers: Map<string, number>): void {
    peers.delete(peer)
    if (peers.size === 0) {
      this.#keys.delete(key)
      this.#chars -= key.length
    }
    const owed = this.#peers.get(peer)
    if (owed !== undefined && --owed.count === 0) this.#peers.delete(peer)
  }
}
