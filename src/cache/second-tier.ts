import type { Readable } from 'node:stream'
import type { cacheStores } from 'undici'
import type { RequestHeaders, ResponseHeaders } from '../headers.js'
import type { CacheRequest } from './local-cache.js'
import { computeFreshness, parseDeltaSeconds } from './policy.js'
import { entrySize, recordedBody, type StoredResponse } from './store.js'

/**
 * Any undici CacheStore (MemoryCacheStore, SqliteCacheStore, undici-cache-redis, ...): the
 * three methods a store must have.
 */
export type CacheStore = Pick<InstanceType<typeof cacheStores.MemoryCacheStore>, 'get' | 'createWriteStream' | 'delete'>
type CacheKey = Parameters<CacheStore['get']>[0]
type CacheValue = Parameters<CacheStore['createWriteStream']>[1]

// How long past staleness an entry with validators stays worth keeping for revalidation.
const KEEP_FOR_VALIDATION_MS = 24 * 3600 * 1000

async function collect (body: unknown, limit: number): Promise<Buffer[] | undefined> {
  if (body === undefined || body === null) return []
  if (typeof body === 'string') return [Buffer.from(body)]
  if (Buffer.isBuffer(body)) return recordedBody([body], body.length)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body as AsyncIterable<Buffer | string> | Readable) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    size += b.length
    if (size > limit) {
      if (typeof (body as Readable).destroy === 'function') (body as Readable).destroy()
      return undefined
    }
    chunks.push(b)
  }
  // A store may hand out views into larger buffers (a client's reply buffer, say).
  return recordedBody(chunks, size)
}

/** Throws when a stored entry is not one this tier can serve (see SecondTier.#lookup). */
function malformed (found: { statusCode: unknown, headers: unknown, cachedAt: unknown }): void {
  const status = found.statusCode
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) {
    throw new Error(`the store returned an entry with an invalid status (${String(status)})`)
  }
  if (typeof found.cachedAt !== 'number' || !Number.isFinite(found.cachedAt)) {
    throw new Error('the store returned an entry without a valid cachedAt')
  }
  const headers = found.headers
  if (headers === undefined || headers === null) return
  if (typeof headers !== 'object') throw new Error('the store returned an entry with invalid headers')
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value === 'string') continue
    if (Array.isArray(value) && value.every((v) => typeof v === 'string')) continue
    throw new Error(`the store returned an entry with an invalid value for header ${name}`)
  }
}

/**
 * A second tier behind the per-host LRU: responses stored in the LRU are written through to
 * an undici CacheStore, and an LRU miss looks there before going to the origin. The store's
 * own Vary matching selects the variant; freshness is recomputed here from what was stored.
 */
export class SecondTier {
  readonly #store: CacheStore
  readonly #maxEntrySize: number
  readonly #onError: (err: Error) => void
  readonly #timeoutMs: number

  /** @param timeoutMs how long a lookup may take, body included, before it counts as a miss. */
  constructor (store: CacheStore, maxEntrySize: number, onError: (err: Error) => void, timeoutMs: number) {
    this.#store = store
    this.#maxEntrySize = maxEntrySize
    this.#onError = onError
    this.#timeoutMs = timeoutMs
  }

  #key (url: URL, headers?: RequestHeaders): CacheKey {
    return { origin: url.origin, method: 'GET', path: url.pathname + url.search, ...(headers === undefined ? {} : { headers }) }
  }

  /**
   * A stored response for the request, or undefined: also when the store has not answered
   * within the timeout (its late answer is dropped). Never rejects.
   */
  lookup (req: CacheRequest): Promise<StoredResponse | undefined> {
    return new Promise((resolve) => {
      let settled = false
      const timer = setTimeout(() => {
        settled = true
        this.#onError(new Error(`the store did not answer a lookup within ${this.#timeoutMs} ms`))
        resolve(undefined)
      }, this.#timeoutMs)
      timer.unref()
      void this.#lookup(req).then((found) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resolve(found)
      })
    })
  }

  async #lookup (req: CacheRequest): Promise<StoredResponse | undefined> {
    try {
      const found = await this.#store.get(this.#key(req.url, req.headers))
      if (found === undefined) return undefined
      // A store may be shared with other writers (or other versions), and what it hands back
      // is served and put in the LRU as it is: an entry without a status, with a header value
      // that is not a string (its size would be NaN, which the LRU throws on, outside any
      // handler: an unhandled rejection and a request that never ends) or without the time it
      // was stored is a failure of the store, and a miss.
      malformed(found)
      const body = await collect(found.body, this.#maxEntrySize)
      if (body === undefined) return undefined
      const bodyLength = body.reduce((n, b) => n + b.length, 0)
      // The request values the response varies on, as they were when it was stored.
      const varyRequest: RequestHeaders = {}
      for (const [name, value] of Object.entries(found.vary ?? {})) {
        if (value !== null) varyRequest[name] = Array.isArray(value) ? value.join(', ') : value
      }
      const headers: ResponseHeaders = { ...found.headers }
      const freshness = computeFreshness(found.statusCode, varyRequest, headers, found.cachedAt, found.cachedAt)
      delete headers.age
      const statusText = typeof found.statusMessage === 'string' ? found.statusMessage : ''
      return {
        status: found.statusCode,
        statusText,
        headers,
        body,
        bodyLength,
        freshness,
        size: entrySize(req.key, headers, bodyLength, statusText, freshness.vary)
      }
    } catch (err) {
      this.#onError(err as Error)
      return undefined
    }
  }

  /** Writes a stored response through. Failures are reported, never thrown. */
  write (req: CacheRequest, stored: StoredResponse): void {
    try {
      const f = stored.freshness
      const cachedAt = f.responseTime
      const staleAt = cachedAt + Math.max(0, f.lifetime - f.initialAge) * 1000
      const grace = Math.max(
        (parseDeltaSeconds(f.directives.get('stale-while-revalidate')) ?? 0) * 1000,
        (parseDeltaSeconds(f.directives.get('stale-if-error')) ?? 0) * 1000,
        f.etag !== undefined || f.lastModified !== undefined ? KEEP_FOR_VALIDATION_MS : 0
      )
      const vary: Record<string, string | null> = {}
      if (f.vary !== null) for (const [name, value] of f.vary) vary[name] = value ?? null
      const value: CacheValue = {
        statusCode: stored.status,
        statusMessage: stored.statusText,
        // The age it had when received travels with it, so freshness comes back the same.
        headers: { ...stored.headers, age: String(Math.floor(f.initialAge)) },
        ...(f.vary === null ? {} : { vary }),
        ...(f.etag === undefined ? {} : { etag: f.etag }),
        cachedAt,
        staleAt,
        deleteAt: Math.max(staleAt, Date.now()) + Math.max(grace, 1000)
      }
      const stream = this.#store.createWriteStream(this.#key(req.url, req.headers), value)
      if (stream === undefined) return
      stream.on('error', (err: Error) => this.#onError(err))
      for (const chunk of stored.body) stream.write(chunk)
      stream.end()
    } catch (err) {
      this.#onError(err as Error)
    }
  }

  delete (url: URL): void {
    try {
      Promise.resolve(this.#store.delete(this.#key(url))).catch((err: Error) => this.#onError(err))
    } catch (err) {
      this.#onError(err as Error)
    }
  }
}
