/**
 * The request loop every throughput cell and pair burst runs: `undici.request(url, { dispatcher })`
 * with the whole body read, `concurrency` at a time. Shared by the scenario runner and the
 * `side` helper, which runs one side of a pair in a process of its own.
 */
import { performance } from 'node:perf_hooks'
import { request, type Dispatcher } from 'undici'
import type { BodyRead } from './common.js'

let readMode: BodyRead = 'stream'

/** Reads a whole response body and resolves to its length in bytes. */
export function readBody (body: Dispatcher.ResponseData['body']): Promise<number> {
  if (readMode === 'arrayBuffer') return body.arrayBuffer().then((b) => b.byteLength)
  return new Promise<number>((resolve, reject) => {
    let n = 0
    body.on('data', (chunk: Buffer) => { n += chunk.length })
    body.once('end', () => resolve(n))
    body.once('error', reject)
  })
}

export interface LoadResult {
  requests: number
  elapsedMs: number
  latencies: number[]
  errors: number
  firstCacheStatus: string
}

/** A warm-up that also counts requests: see `load()`. */
export interface AtLeast {
  /** Requests to start before stopping, even after `durationMs`. */
  requests: number
  /** When to stop even if fewer have started, ms from the start. */
  maxMs: number
}

/**
 * Keeps `concurrency` requests in flight until `durationMs` has passed, each
 * `undici.request(url, { dispatcher })` with its whole body read. With `atLeast`, it goes on
 * past `durationMs` until `atLeast.requests` have started or `atLeast.maxMs` has passed.
 */
export async function load (dispatcher: Dispatcher, nextUrl: () => string, size: number, concurrency: number, durationMs: number,
  atLeast?: AtLeast): Promise<LoadResult> {
  const latencies: number[] = []
  let errors = 0
  let firstCacheStatus = ''
  let started = 0
  const start = performance.now()
  const deadline = start + durationMs
  const minRequests = atLeast?.requests ?? 0
  const hardDeadline = start + Math.max(durationMs, atLeast?.maxMs ?? 0)
  const goOn = (): boolean => {
    const now = performance.now()
    return now < deadline || (started < minRequests && now < hardDeadline)
  }
  const worker = async (): Promise<void> => {
    while (goOn()) {
      started++
      const url = nextUrl()
      const t0 = performance.now()
      try {
        const res = await request(url, { dispatcher })
        const bytes = await readBody(res.body)
        latencies.push(performance.now() - t0)
        if (res.statusCode !== 200 || bytes !== size) errors++
        if (firstCacheStatus === '') {
          const cs = res.headers['cache-status']
          firstCacheStatus = Array.isArray(cs) ? cs.join(', ') : (cs ?? '(none)')
        }
      } catch (err) {
        errors++
        if (errors === 1) console.error(`bench: request failed: ${(err as Error).message}`)
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return { requests: latencies.length, elapsedMs: performance.now() - start, latencies, errors, firstCacheStatus }
}

/** How bodies are read: `stream` counts the bytes of each chunk, `arrayBuffer` collects them. */
export function setReadMode (mode: BodyRead): void {
  readMode = mode
}
