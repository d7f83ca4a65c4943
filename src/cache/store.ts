import { LRUCache } from 'lru-cache'
import type { ResponseHeaders } from '../headers.js'
import type { Freshness } from './policy.js'

/** One stored response: one variant of one URL. */
export interface StoredResponse {
  readonly status: number
  readonly statusText: string
  /** Headers as stored: end-to-end only, without Age (added per hit). */
  readonly headers: ResponseHeaders
  /** At most one Buffer: a hit then replays with one call into the caller's handler. */
  readonly body: readonly Buffer[]
  readonly bodyLength: number
  readonly freshness: Freshness
  /** Bytes charged against the budgets: body, headers and a fixed overhead. */
  readonly size: number
  /**
   * The headers of the last hit served from this response: Age and Cache-Status change at
   * most once a second, so hits within that second share one prepared set.
   */
  hit?: PreparedHit
}

/** Hit headers prepared once and shared by the hits that carry the same Age and Cache-Status. */
export interface PreparedHit {
  readonly age: number
  readonly ttl: number
  readonly detail: string
  readonly forward: string | undefined
  readonly cacheStatus: string
  headers: ResponseHeaders | undefined
  raw: Buffer[] | undefined
}

/** The variants stored for one URL, most recently stored first. */
interface Variants {
  readonly list: readonly StoredResponse[]
  readonly size: number
}

// What a stored response costs beyond its bytes: objects, the key, the freshness record.
const ENTRY_OVERHEAD = 512

/**
 * Bytes a response will be charged, given its headers and body length, its status text and
 * the request values it varies on (kept in its freshness record for Vary matching): both come
 * from outside and can be kilobytes each, so they count against the budgets like headers do.
 */
export function entrySize (url: string, headers: ResponseHeaders, bodyLength: number, statusText = '',
  vary: ReadonlyMap<string, string | undefined> | null = null): number {
  let n = ENTRY_OVERHEAD + url.length + bodyLength + statusText.length
  if (vary !== null) for (const [name, value] of vary) n += name.length + (value?.length ?? 0) + 4
  for (const name in headers) {
    const v = headers[name]
    n += name.length + 4
    if (Array.isArray(v)) for (const x of v) n += x.length + name.length + 4
    else if (v !== undefined) n += v.length
  }
  return n
}

export interface StoreOptions {
  maxSize: number
  /** Origin hosts with stored responses at most; a new one past that evicts the least recently used host. */
  maxHosts?: number
  /**
   * Called for every URL evicted to stay within a budget, and for every variant of a URL dropped
   * to keep its newer variants within maxHostSize (not for replacements or deletes).
   */
  onEvict?: (host: string, url: string, bytes: number) => void
  maxHostSize: number
  maxEntrySize: number
}

export interface StoreCounters {
  bytes: number
  entries: number
  evictions: number
  hosts: number
}

/**
 * Byte-bounded storage: one LRU per origin host (so one busy host cannot flush every other),
 * all under one total budget, evicting from the least recently used host when the total is
 * over. It only stores: what may be stored, and when, is decided elsewhere.
 */
export class Store {
  readonly #opts: StoreOptions
  readonly #hosts = new Map<string, LRUCache<string, Variants>>()
  // Host recency for the total budget: a counter stamp per use, compared only when evicting,
  // so a hit costs one Map write instead of reordering the host table.
  readonly #used = new Map<string, number>()
  #tick = 0
  #bytes = 0
  #entries = 0
  #evictions = 0
  readonly #hostBytes = new Map<string, number>()

  constructor (opts: StoreOptions) {
    this.#opts = opts
  }

  #touch (host: string): LRUCache<string, Variants> | undefined {
    const lru = this.#hosts.get(host)
    if (lru !== undefined) this.#used.set(host, ++this.#tick)
    return lru
  }

  #lruFor (host: string): LRUCache<string, Variants> {
    const existing = this.#touch(host)
    if (existing !== undefined) return existing
    // Each host costs an LRU of its own: a flood of distinct hosts evicts whole old hosts.
    while (this.#hosts.size >= (this.#opts.maxHosts ?? Infinity)) {
      const oldest = this.#oldestHost()
      if (oldest === undefined) break
      const old = this.#hosts.get(oldest)
      if (old !== undefined) {
        let evicted = 0
        for (const [url, v] of old.entries()) {
          evicted += v.list.length
          this.#opts.onEvict?.(oldest, url, v.size)
        }
        old.clear() // disposes each entry, which keeps the byte and entry counts right
        this.#evictions += evicted
      }
      this.#forget(oldest)
    }
    const lru = new LRUCache<string, Variants>({
      maxSize: this.#opts.maxHostSize,
      sizeCalculation: (v) => v.size,
      dispose: (v, key, reason) => {
        this.#bytes -= v.size
        this.#entries -= v.list.length
        this.#hostBytes.set(host, (this.#hostBytes.get(host) ?? 0) - v.size)
        if (reason === 'evict') {
          this.#evictions += v.list.length
          this.#opts.onEvict?.(host, key, v.size)
        }
      }
    })
    this.#hosts.set(host, lru)
    this.#used.set(host, ++this.#tick)
    return lru
  }

  /** The stored variants of a URL, most recent first; marks the URL as recently used. */
  get (host: string, url: string): readonly StoredResponse[] | undefined {
    return this.#touch(host)?.get(url)?.list
  }

  /** Without touching recency: for tests and stats. */
  peek (host: string, url: string): readonly StoredResponse[] | undefined {
    return this.#hosts.get(host)?.peek(url)?.list
  }

  /**
   * Stores a response, replacing the variant it supersedes (`replaces`, or one with the same
   * Vary values). Returns false when it cannot fit.
   */
  put (host: string, url: string, response: StoredResponse, replaces?: StoredResponse): boolean {
    if (response.size > this.#opts.maxEntrySize || response.size > this.#opts.maxHostSize) return false
    const lru = this.#lruFor(host)
    const previous = lru.peek(url)?.list ?? []
    const kept = previous.filter((v) => v !== replaces && !sameVariant(v, response))
    const list = [response, ...kept]
    let size = 0
    for (const v of list) size += v.size
    // A URL whose variants outgrow the host budget keeps only its newest ones.
    // Those dropped are evictions to stay within maxHostSize, counted and reported as such.
    while (size > this.#opts.maxHostSize && list.length > 1) {
      const dropped = list.pop() as StoredResponse
      size -= dropped.size
      this.#evictions++
      this.#opts.onEvict?.(host, url, dropped.size)
    }
    lru.set(url, { list, size })
    this.#bytes += size
    this.#entries += list.length
    this.#hostBytes.set(host, (this.#hostBytes.get(host) ?? 0) + size)
    this.#enforceTotal()
    return true
  }

  /** Removes every variant of a URL (RFC 9111 section 4.4 invalidation). Returns how many. */
  delete (host: string, url: string): number {
    const lru = this.#hosts.get(host)
    if (lru === undefined) return 0
    const n = lru.peek(url)?.list.length ?? 0
    lru.delete(url)
    this.#dropIfEmpty(host, lru)
    return n
  }

  #dropIfEmpty (host: string, lru: LRUCache<string, Variants>): void {
    if (lru.size === 0) this.#forget(host)
  }

  #forget (host: string): void {
    this.#hosts.delete(host)
    this.#hostBytes.delete(host)
    this.#used.delete(host)
  }

  /** The least recently used host: a scan, but only when the total budget is exceeded. */
  #oldestHost (): string | undefined {
    let oldest: string | undefined
    let stamp = Infinity
    for (const [host, used] of this.#used) {
      if (used < stamp) {
        stamp = used
        oldest = host
      }
    }
    return oldest
  }

  #enforceTotal (): void {
    while (this.#bytes > this.#opts.maxSize) {
      const host = this.#oldestHost()
      if (host === undefined) return
      const lru = this.#hosts.get(host)
      if (lru === undefined || lru.pop() === undefined || lru.size === 0) this.#forget(host)
    }
  }

  clear (): void {
    for (const lru of this.#hosts.values()) lru.clear()
    this.#hosts.clear()
    this.#hostBytes.clear()
    this.#used.clear()
  }

  counters (): StoreCounters {
    return { bytes: this.#bytes, entries: this.#entries, evictions: this.#evictions, hosts: this.#hosts.size }
  }

  /** Bytes stored per host. */
  hostBytes (): Record<string, number> {
    return Object.fromEntries(this.#hostBytes)
  }
}

function sameVariant (a: StoredResponse, b: StoredResponse): boolean {
  const va = a.freshness.vary
  const vb = b.freshness.vary
  if (va === null || vb === null) return va === vb
  if (va.size !== vb.size) return false
  for (const [k, v] of va) if (!vb.has(k) || vb.get(k) !== v) return false
  return true
}

/**
 * A recorded body as it is kept: one Buffer of exactly its length, so a hit replays with one
 * call into the caller's handler instead of one per network read (with a stream consumer,
 * each further chunk is a round of backpressure). A single chunk that owns its memory, give or
 * take an eighth, is kept as it is; a view into a larger buffer would keep all of it alive.
 */
export function recordedBody (chunks: readonly Buffer[], length: number): Buffer[] {
  if (length === 0) return []
  const only = chunks.length === 1 ? chunks[0] as Buffer : undefined
  if (only !== undefined && only.buffer.byteLength - length <= length / 8) return [only]
  const out = Buffer.allocUnsafeSlow(length)
  let offset = 0
  for (const c of chunks) offset += c.copy(out, offset)
  return [out]
}
