/**
 * A consistent-hash ring with virtual nodes, in the manner of groupcache's consistenthash.
 *
 * Pure: it knows nothing of HTTP. The ring is rebuilt whole on every pool change and never
 * mutated afterwards, so a lookup never sees half a pool.
 */

/** Maps a string to an unsigned 32-bit integer. */
export type HashFunction = (input: string) => number

export class Ring {
  readonly #hash: HashFunction
  readonly #members: readonly string[]
  readonly #points: Uint32Array
  readonly #owners: Uint32Array
  // Where each bucket of the hash space starts in #points: bucket b holds the points whose top
  // bits are b, so a lookup searches one bucket (one or two points on average) instead of the
  // whole ring (17 steps at 512 members x 160 vnodes, each a likely cache miss).
  readonly #bucketShift: number
  readonly #bucketStart: Uint32Array

  /**
   * @param members the peer identities; order does not matter, duplicates are ignored.
   * @param vnodes points per member on the ring.
   * @param hash a 32-bit hash; injected so tests can place points by hand.
   */
  constructor (members: Iterable<string>, vnodes: number, hash: HashFunction) {
    this.#hash = hash
    // Sorting first makes the ring a function of the set, not of the order it was given in,
    // including how hash collisions between two members are broken.
    const sorted = [...new Set(members)].sort()
    this.#members = sorted
    const count = sorted.length * vnodes
    if (sorted.length > 65536) throw new RangeError('a ring holds at most 65,536 members')
    // Each point packed as hash * 65536 + member index in one float64 (exact below 2^53):
    // one typed-array sort orders by hash and breaks ties by member, with no per-point objects.
    const packed = new Float64Array(count)
    let n = 0
    for (let m = 0; m < sorted.length; m++) {
      const member = sorted[m] as string
      for (let v = 0; v < vnodes; v++) {
        // groupcache's scheme: the replica index, then the member name.
        packed[n++] = (hash(`${v}${member}`) >>> 0) * 65536 + m
      }
    }
    packed.sort()
    this.#points = new Uint32Array(count)
    this.#owners = new Uint32Array(count)
    for (let i = 0; i < count; i++) {
      const p = packed[i] as number
      const m = p % 65536
      this.#points[i] = (p - m) / 65536
      this.#owners[i] = m
    }
    // About one bucket per point, at most 2^16 of them (256 KiB of index).
    const bits = Math.min(16, Math.max(1, Math.ceil(Math.log2(Math.max(count, 2)))))
    this.#bucketShift = 32 - bits
    const buckets = 2 ** bits
    this.#bucketStart = new Uint32Array(buckets + 1)
    let i = 0
    for (let b = 0; b <= buckets; b++) {
      while (i < count && ((this.#points[i] as number) >>> this.#bucketShift) < b) i++
      this.#bucketStart[b] = i
    }
  }

  /** The members, sorted. */
  get members (): readonly string[] {
    return this.#members
  }

  get size (): number {
    return this.#members.length
  }

  /** The member owning `key`, or undefined when the ring is empty. */
  get (key: string): string | undefined {
    return this.getByHash(this.#hash(key) >>> 0)
  }

  /** The member owning a key whose hash is already known. */
  getByHash (h: number): string | undefined {
    const points = this.#points
    const n = points.length
    if (n === 0) return undefined
    // First point clockwise from h (lower bound), wrapping to the start of the ring. Points
    // in earlier buckets are all below h and those in later ones all above it, so the lower
    // bound lies within h's bucket or at its end.
    const bucket = h >>> this.#bucketShift
    let lo = this.#bucketStart[bucket] as number
    let hi = this.#bucketStart[bucket + 1] as number
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((points[mid] as number) < h) lo = mid + 1
      else hi = mid
    }
    if (lo === n) lo = 0
    return this.#members[this.#owners[lo] as number]
  }
}
