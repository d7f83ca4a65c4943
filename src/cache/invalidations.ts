/**
 * RFC 9111 section 4.4 drops what is stored, but a response already on its way (an origin fetch,
 * an owner's answer being copied hot) was read before the unsafe request changed the resource:
 * stored after the invalidation, it would be served as fresh. Whoever starts reading one notes
 * `sequence` and stores nothing if its key was invalidated since. The log keeps the latest
 * invalidations; a reader older than what it has forgotten stores nothing (a miss more, never
 * a stale hit).
 */
export class Invalidations {
  readonly #limit: number
  #sequence = 0
  readonly #at = new Map<string, number>()
  #forgottenUpTo = 0

  /** @param limit invalidations remembered, by key */
  constructor (limit = 4096) {
    this.#limit = limit
  }

  /** The number a reader starting now notes, for since(). */
  get sequence (): number {
    return this.#sequence
  }

  /** Was `key` invalidated after a reader that noted `sequence` started? */
  since (key: string, sequence: number): boolean {
    if (sequence < this.#forgottenUpTo) return true
    const at = this.#at.get(key)
    return at !== undefined && at > sequence
  }

  /** Notes an invalidation of `key` now. */
  add (key: string): void {
    const seq = ++this.#sequence
    this.#at.delete(key)
    this.#at.set(key, seq)
    if (this.#at.size > this.#limit) {
      const [oldestKey, oldest] = this.#at.entries().next().value as [string, number]
      this.#at.delete(oldestKey)
      this.#forgottenUpTo = oldest
    }
  }
}
