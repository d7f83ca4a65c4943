/**
 * What the bench's processes share: the cell spec and result shapes that travel over IPC,
 * the origin's URL scheme, percentiles, and a small request/reply client for helper processes.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const THROUGHPUT_SCENARIOS = [
  'direct', 'undici-cache', 'undici-cache-miss', 'floor', 'local-hit', 'forwarded-hit', 'owner-wire', 'hot-hit', 'miss'
] as const
export const SPECIAL_SCENARIOS = [
  'coalesce', 'coalesce-undici-cache', 'ring', 'memory', 'memory-undici-cache', 'memory-floor', 'pairs'
] as const

export type ThroughputScenario = typeof THROUGHPUT_SCENARIOS[number]
export type SpecialScenario = typeof SPECIAL_SCENARIOS[number]
export type Scenario = ThroughputScenario | SpecialScenario

/** The pairs, as [name, first (measured), second (its reference)]. */
export const PAIRS = [
  ['local-hit / floor', 'local-hit', 'floor'],
  // The floor replaying the three fields a cache hit must add (Date, Age, Cache-Status): how
  // much of the gap to the floor is undici parsing those fields on every hit.
  ['local-hit / floor with a hit\'s fields', 'local-hit', 'floor-hit-fields'],
  ['local-hit / undici-cache', 'local-hit', 'undici-cache'],
  ['forwarded-hit / direct', 'forwarded-hit', 'direct'],
  ['miss / undici-cache-miss', 'miss', 'undici-cache-miss']
] as const

/**
 * Pairs whose sides each run in a `side` helper process of their own, taking turns the same
 * way. In one process a 1 MiB miss pair measures the allocator more than either cache:
 * undici's store grows that process to ~1.1 GB, after which the Peer's 1 MiB copies land on
 * fresh pages (bench/README, "miss at 1 MiB").
 */
export const SPLIT_PAIRS = [
  ['miss / undici-cache-miss, a process each', 'miss', 'undici-cache-miss']
] as const

/** The sides a `side` helper can run. */
export type SplitSide = typeof SPLIT_PAIRS[number][1 | 2]

/** What a `side` helper is told to run. */
export interface SideInit { side: SplitSide, origin: string, size: number, concurrency: number, read: BodyRead }

/** One side's count over one or more bursts. */
export interface Tally { requests: number, ms: number, errors: number }

export function isScenario (s: string): s is Scenario {
  return (THROUGHPUT_SCENARIOS as readonly string[]).includes(s) || (SPECIAL_SCENARIOS as readonly string[]).includes(s)
}

/** One measured cell: one scenario at one size and concurrency (or peer count), in one process. */
export interface CellSpec {
  scenario: Scenario
  /** Response body bytes. */
  size: number
  /** Requests in flight at once. */
  concurrency: number
  /** Ring size, for the `ring` scenario (0 elsewhere). */
  peers: number
  /** Length of the measured window. */
  durationMs: number
  /** Unmeasured traffic before it (after the cache is filled), so the JIT and the sockets are warm. */
  warmupMs: number
  /**
   * Hit cells (and the hit sides of pairs) warm up for at least this many requests as well,
   * stretching `warmupMs` up to `warmupMaxMs`: the JIT needs a number of calls, not of
   * milliseconds, and a slow cell (two processes at one request in flight) got a fraction of
   * a fast one's warm-up in the same time. Miss cells keep `warmupMs` alone: undici's store
   * keeps what they fetch, and a longer warm-up grew the heap its side was measured beside.
   */
  warmupRequests: number
  /** Upper bound of a hit cell's warm-up when `warmupRequests` have not all run, ms. */
  warmupMaxMs: number
  round: number
  /**
   * How each response body is read, whole: 'stream' counts the bytes of every chunk as it
   * arrives (no copy); 'arrayBuffer' is `await body.arrayBuffer()` (one more copy of the body,
   * which in undici 7 is a zero-filled allocation plus a copy when the body came as one chunk).
   */
  read: BodyRead
  /** Sign requests between peers with this shared secret (the Peer `secret` option); '' for none. */
  secret: string
}

export type BodyRead = 'stream' | 'arrayBuffer'

export interface CellResult {
  spec: CellSpec
  /** Requests (or ownerOf calls) completed in the measured window. */
  requests: number
  elapsedMs: number
  opsPerSec: number
  /** Per-request latency, from request() to the last body byte read; null where not meaningful. */
  p50Ms: number | null
  p99Ms: number | null
  /** Peak resident set size of the measuring process (process.resourceUsage().maxRSS). */
  maxRssBytes: number
  /** Requests the origin received during the measured window; null where there is no origin. */
  originRequests: number | null
  /** Responses that were not 200 with the whole expected body, plus thrown requests. */
  errors: number
  /** Scenario-specific numbers and notes. */
  extra: Record<string, number | string>
}

export const KiB = 1024
export const MiB = 1024 * 1024

/**
 * The origin's URL scheme: `/o/{bodyBytes}/{holdMs}/{anything}`. Every answer is 200, cacheable
 * by a shared cache for an hour, with an exact Content-Length.
 */
export function originPath (size: number, holdMs: number, name: string): string {
  return `/o/${size}/${holdMs}/${name}`
}

export const ORIGIN_CACHE_CONTROL = 'public, max-age=3600'

/** Distinct URLs a hit scenario cycles through (all warmed first). */
export const HIT_KEYS = 8

/** The HIT_KEYS URLs of a hit scenario on `base`, named `{prefix}-{k}`. */
export function hitUrls (base: string, size: number, prefix: string): string[] {
  return Array.from({ length: HIT_KEYS }, (_, k) => `${base}${originPath(size, 0, `${prefix}-${k}`)}`)
}

/** Nearest-rank percentile of an unsorted sample, in the sample's unit. */
export function percentile (sorted: Float64Array, p: number): number | null {
  if (sorted.length === 0) return null
  const rank = Math.max(1, Math.ceil(p * sorted.length))
  return sorted[Math.min(sorted.length, rank) - 1] ?? null
}

export function sortedSample (values: readonly number[]): Float64Array {
  const a = Float64Array.from(values)
  a.sort()
  return a
}

export function median (values: readonly number[]): number | null {
  if (values.length === 0) return null
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

export function sizeLabel (bytes: number): string {
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB} MiB`
  if (bytes >= KiB && bytes % KiB === 0) return `${bytes / KiB} KiB`
  return `${bytes} B`
}

export function maxRssBytes (): number {
  // maxRSS is in kilobytes on Linux and macOS.
  return process.resourceUsage().maxRSS * 1024
}

// ---------------------------------------------------------------------------------------------
// Helper processes (origin, remote peer): a request/reply protocol over the IPC channel.
// ---------------------------------------------------------------------------------------------

/** CPU time this process has used so far (user + system), microseconds. */
export function cpuMicros (): number {
  const u = process.cpuUsage()
  return u.user + u.system
}

/**
 * CPU time (user + system) of this process's main thread alone, µs, from Linux's
 * /proc/self/task/PID/stat: the rest of cpuMicros() is libuv's and V8's threads (concurrent
 * marking and sweeping, mostly). Counted in clock ticks (10 ms here), so only sums over many
 * samples mean anything. undefined where there is no /proc.
 */
export function mainThreadCpuMicros (): number | undefined {
  let stat: string
  try {
    stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'latin1')
  } catch {
    return undefined
  }
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12])
  return Number.isFinite(ticks) ? ticks * CLOCK_TICK_MICROS : undefined
}

// USER_HZ, which Linux fixes at 100 for /proc whatever the kernel's own tick.
const CLOCK_TICK_MICROS = 10_000

export type HelperRole = 'origin' | 'peer' | 'side' | 'fixed'

/**
 * Node flags of every process the bench forks. The warning silenced here is the Peer's notice
 * that it runs without `secret` (the bench's default); it would be printed once per process.
 */
export const CHILD_NODE_FLAGS: readonly string[] = ['--disable-warning=FORWARDCACHE_UNAUTHENTICATED']

/**
 * Extra Node flags for the helper processes only (the origin and the owner peer), from the
 * environment variable FORWARDCACHE_BENCH_HELPER_ARGS, e.g. `--cpu-prof --cpu-prof-dir=/tmp/b`
 * to profile the owner of forwarded-hit. Split on whitespace.
 */
export const HELPER_NODE_FLAGS: readonly string[] = (process.env.FORWARDCACHE_BENCH_HELPER_ARGS ?? '').split(/\s+/).filter((f) => f !== '')

export interface HelperRequest { id: number, cmd: string, args?: unknown }
export type HelperReply = { id: number, ok: true, result: unknown } | { id: number, ok: false, error: string }
export interface HelperHello { hello: true, url: string }

export class Helper {
  readonly proc: ChildProcess
  readonly url: string
  #next = 1
  readonly #waiting = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void }>()

  private constructor (proc: ChildProcess, url: string) {
    this.proc = proc
    this.url = url
    proc.on('message', (m: HelperReply | HelperHello) => {
      if ('hello' in m) return
      const w = this.#waiting.get(m.id)
      if (w === undefined) return
      this.#waiting.delete(m.id)
      if (m.ok) w.resolve(m.result)
      else w.reject(new Error(m.error))
    })
    proc.on('exit', (code) => {
      for (const w of this.#waiting.values()) w.reject(new Error(`helper exited with code ${String(code)}`))
      this.#waiting.clear()
    })
  }

  /** Forks dist/bench/helper.js in `role` and waits for it to listen. */
  static async start (role: HelperRole): Promise<Helper> {
    const script = fileURLToPath(new URL('./helper.js', import.meta.url))
    const proc = fork(script, [role], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [...CHILD_NODE_FLAGS, ...HELPER_NODE_FLAGS] })
    const url = await new Promise<string>((resolve, reject) => {
      proc.once('error', reject)
      proc.once('exit', (code) => reject(new Error(`${role} helper exited early with code ${String(code)}`)))
      proc.once('message', (m: HelperHello) => resolve(m.url))
    })
    proc.removeAllListeners('exit')
    proc.removeAllListeners('error')
    return new Helper(proc, url)
  }

  call<T = unknown> (cmd: string, args?: unknown): Promise<T> {
    const id = this.#next++
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(id, { resolve: resolve as (v: unknown) => void, reject })
      const msg: HelperRequest = args === undefined ? { id, cmd } : { id, cmd, args }
      this.proc.send(msg)
    })
  }

  stop (): void {
    if (this.proc.connected) this.proc.disconnect()
    this.proc.kill()
  }
}

/** A positive integer option `--name=N` of a bench script's own command line, or `fallback`. */
export function intOption (name: string, fallback: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`))
  const value = arg === undefined ? fallback : Number(arg.slice(name.length + 3))
  if (!Number.isInteger(value) || value <= 0) throw new Error(`expected --${name} to be a positive integer`)
  return value
}
