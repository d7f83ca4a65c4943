/**
 * npm run bench: every scenario in a fresh process (a fork of dist/bench/scenario.js), one cell
 * at a time, interleaved over several rounds with the order rotated each round, then one table
 * of medians and the ratios between scenarios measured in this same run.
 *
 * Options (all optional):
 *   --rounds=3            rounds of every cell
 *   --duration=1000       measured window per cell, ms
 *   --warmup=300          unmeasured traffic per cell after the cache is filled, ms
 *   --warmup-requests=8000   hit cells warm up for at least this many requests as well...
 *   --warmup-max=4000        ...unless this many ms have passed (0 and 0: time alone)
 *   --sizes=1024,65536,1048576
 *   --concurrency=1,32
 *   --peers=3,64,512      ring sizes for the ring scenario
 *   --only=local-hit,floor,...   scenarios to run (default: all)
 *   --read=stream        how bodies are read whole: stream (count each chunk's bytes, no copy) or
 *                         arrayBuffer (await body.arrayBuffer(): one more copy of every body)
 *   --secret=STRING       sign requests between peers (the Peer `secret` option, >= 16 chars)
 *   --json=FILE           also write every cell's raw result to FILE
 *   --node-args="..."     extra Node flags for the scenario processes (e.g. --cpu-prof)
 *   --pair-burst=100      length of one burst of the same-process pairs, ms
 *
 * It prints numbers; it asserts nothing about them.
 */
import { execFileSync, fork } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import {
  CHILD_NODE_FLAGS, KiB, MiB, PAIRS, SPECIAL_SCENARIOS, SPLIT_PAIRS, THROUGHPUT_SCENARIOS, isScenario, median, sizeLabel,
  type BodyRead, type CellResult, type CellSpec, type Scenario
} from './common.js'

interface Settings {
  rounds: number
  durationMs: number
  warmupMs: number
  warmupRequests: number
  warmupMaxMs: number
  sizes: number[]
  concurrency: number[]
  peers: number[]
  only: Set<Scenario> | null
  json: string | null
  nodeArgs: string[]
  read: BodyRead
  secret: string
  pairBurstMs: number
}

function parseArgs (argv: readonly string[]): Settings {
  const opts = new Map<string, string>()
  for (const a of argv) {
    const m = /^--([a-z-]+)=(.*)$/.exec(a)
    if (m === null) throw new Error(`unknown argument ${a} (options look like --name=value)`)
    opts.set(m[1] as string, m[2] as string)
  }
  const int = (name: string, fallback: number): number => {
    const v = opts.get(name)
    if (v === undefined) return fallback
    const n = Number(v)
    if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer`)
    return n
  }
  const count = (name: string, fallback: number): number => {
    const v = opts.get(name)
    if (v === undefined) return fallback
    const n = Number(v)
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer`)
    return n
  }
  const ints = (name: string, fallback: number[]): number[] => {
    const v = opts.get(name)
    if (v === undefined) return fallback
    return v.split(',').map((x) => {
      const n = Number(x)
      if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be positive integers`)
      return n
    })
  }
  let only: Set<Scenario> | null = null
  const o = opts.get('only')
  if (o !== undefined) {
    only = new Set()
    for (const s of o.split(',')) {
      if (!isScenario(s)) throw new Error(`unknown scenario ${s}; known: ${[...THROUGHPUT_SCENARIOS, ...SPECIAL_SCENARIOS].join(', ')}`)
      only.add(s)
    }
  }
  const nodeArgs = opts.get('node-args')
  const read = opts.get('read') ?? 'stream'
  if (read !== 'stream' && read !== 'arrayBuffer') throw new Error('--read must be stream or arrayBuffer')
  const secret = opts.get('secret') ?? ''
  if (secret !== '' && secret.length < 16) throw new Error('--secret must be at least 16 characters')
  return {
    read,
    secret,
    rounds: int('rounds', 3),
    pairBurstMs: int('pair-burst', 100),
    durationMs: int('duration', 1000),
    warmupMs: int('warmup', 300),
    warmupRequests: count('warmup-requests', 8000),
    warmupMaxMs: count('warmup-max', 4000),
    sizes: ints('sizes', [KiB, 64 * KiB, MiB]),
    concurrency: ints('concurrency', [1, 32]),
    peers: ints('peers', [3, 64, 512]),
    only,
    json: opts.get('json') ?? null,
    nodeArgs: nodeArgs === undefined || nodeArgs === '' ? [] : nodeArgs.split(/\s+/)
  }
}

function warmupText (s: Settings): string {
  if (s.warmupRequests === 0 || s.warmupMaxMs <= s.warmupMs) return `${s.warmupMs} ms warm-up per cell`
  return `a warm-up of ${s.warmupMs} ms and at least ${s.warmupRequests} requests (at most ${s.warmupMaxMs} ms) per hit cell, ${s.warmupMs} ms per miss cell`
}

function rotate<T> (list: readonly T[], by: number): T[] {
  if (list.length === 0) return []
  const k = by % list.length
  return [...list.slice(k), ...list.slice(0, k)]
}

/** Every cell of one round, in this round's order. */
function plan (s: Settings, round: number): CellSpec[] {
  const want = (sc: Scenario): boolean => s.only === null || s.only.has(sc)
  const base = { durationMs: s.durationMs, warmupMs: s.warmupMs, warmupRequests: s.warmupRequests, warmupMaxMs: s.warmupMaxMs, round, peers: 0, read: s.read, secret: s.secret }
  // One group per (size, concurrency): the scenarios compared with each other run back to
  // back, in an order rotated every round, so drift in the machine hits them alike.
  const groups: CellSpec[][] = []
  for (const size of s.sizes) {
    for (const concurrency of s.concurrency) {
      groups.push(rotate(THROUGHPUT_SCENARIOS.filter((sc) => want(sc) && (sc !== 'owner-wire' || s.secret === '')), round).map((scenario) => ({ ...base, scenario, size, concurrency })))
    }
  }
  const special: CellSpec[] = []
  if (want('coalesce')) special.push({ ...base, scenario: 'coalesce', size: KiB, concurrency: 100 })
  if (want('coalesce-undici-cache')) special.push({ ...base, scenario: 'coalesce-undici-cache', size: KiB, concurrency: 100 })
  if (want('ring')) for (const peers of s.peers) special.push({ ...base, scenario: 'ring', size: 0, concurrency: 1, peers })
  if (want('memory')) special.push({ ...base, scenario: 'memory', size: MiB, concurrency: 1 })
  if (want('memory-undici-cache')) special.push({ ...base, scenario: 'memory-undici-cache', size: MiB, concurrency: 1 })
  if (want('memory-floor')) special.push({ ...base, scenario: 'memory-floor', size: MiB, concurrency: 1 })
  if (special.length > 0) groups.push(rotate(special, round))
  // The same-process pairs take 20 alternating bursts per pair in one cell, so one round of
  // them is enough; they run in the first round.
  if (want('pairs') && round === 0) {
    for (const size of s.sizes) {
      for (const concurrency of s.concurrency) groups.push([{ ...base, durationMs: s.pairBurstMs, scenario: 'pairs', size, concurrency }])
    }
  }
  return rotate(groups, round).flat()
}

const CELL_TIMEOUT_MS = 120_000

function runCell (spec: CellSpec, nodeArgs: readonly string[]): Promise<CellResult> {
  const script = fileURLToPath(new URL('./scenario.js', import.meta.url))
  const execArgv = [...CHILD_NODE_FLAGS, ...(spec.scenario.startsWith('memory') ? ['--expose-gc'] : []), ...nodeArgs]
  const child = fork(script, [JSON.stringify(spec)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv })
  return new Promise((resolve, reject) => {
    let res: CellResult | undefined
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${spec.scenario} timed out after ${CELL_TIMEOUT_MS} ms`))
    }, CELL_TIMEOUT_MS)
    child.on('message', (m: { result?: CellResult }) => { if (m.result !== undefined) res = m.result })
    child.on('error', (err) => { clearTimeout(timer); reject(err) })
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (res !== undefined) resolve(res)
      else reject(new Error(`${spec.scenario} ${sizeLabel(spec.size)} c=${spec.concurrency} exited with ${signal ?? String(code)} and no result`))
    })
  })
}

// ---------------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------------

function cellKey (s: CellSpec): string {
  return `${s.scenario}|${s.size}|${s.concurrency}|${s.peers}`
}

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US')
const fmtMs = (n: number | null): string => {
  if (n === null) return '-'
  if (n >= 100) return n.toFixed(0)
  if (n >= 10) return n.toFixed(1)
  if (n >= 1) return n.toFixed(2)
  return n.toFixed(3)
}
const fmtMiB = (bytes: number): string => (bytes / MiB).toFixed(1)
const fmtRatio = (r: number | null): string => r === null || !Number.isFinite(r) ? '-' : (r >= 10 ? r.toFixed(1) : r.toFixed(2))

function table (headers: readonly string[], rows: ReadonlyArray<readonly string[]>, rightAlign: ReadonlySet<number>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]): string => '| ' + cells.map((c, i) => {
    const w = widths[i] as number
    return rightAlign.has(i) ? c.padStart(w) : c.padEnd(w)
  }).join(' | ') + ' |'
  const sep = '|' + widths.map((w, i) => rightAlign.has(i) ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2)).join('|') + '|'
  return [line(headers), sep, ...rows.map(line)].join('\n')
}

function spread (values: readonly number[]): string {
  const m = median(values)
  if (m === null || m === 0 || values.length < 2) return ''
  const lo = Math.min(...values)
  const hi = Math.max(...values)
  return ` ±${(((hi - lo) / 2 / m) * 100).toFixed(0)}%`
}

function gitDescription (): string {
  const root = fileURLToPath(new URL('../..', import.meta.url))
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    return `commit ${commit}${dirty === '' ? '' : ' with uncommitted changes in src/'}`
  } catch {
    return 'commit unknown (not a git work tree)'
  }
}

function report (s: Settings, planned: number, results: readonly CellResult[], wallMs: number, loads: readonly number[], git: string): string {
  const by = new Map<string, CellResult[]>()
  for (const r of results) {
    const k = cellKey(r.spec)
    const list = by.get(k) ?? []
    list.push(r)
    by.set(k, list)
  }
  const out: string[] = []
  const cpu = (() => {
    try {
      return /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? '?'
    } catch {
      return os.cpus()[0]?.model ?? '?'
    }
  })()
  const undiciVersion = (() => {
    try {
      const p = fileURLToPath(new URL('../../node_modules/undici/package.json', import.meta.url))
      return (JSON.parse(readFileSync(p, 'utf8')) as { version: string }).version
    } catch {
      return '?'
    }
  })()
  out.push(`forwardcache bench: Node ${process.version}, undici ${undiciVersion}, ${os.availableParallelism()} CPUs (${cpu}), ${os.platform()} ${os.release()}`)
  out.push(`forwardcache ${git}; bodies read with ${s.read === 'stream' ? 'a byte count of every chunk (no copy)' : 'body.arrayBuffer()'}; peers ${s.secret === '' ? 'without' : 'with'} a secret`)
  out.push(`${s.rounds} rounds, ${planned} cells, each in a fresh process; ${s.durationMs} ms measured after ${warmupText(s)}; ${results.length} of ${planned} cells succeeded; total ${(wallMs / 1000).toFixed(0)} s`)
  if (loads.length > 0) {
    out.push(`1-minute load average sampled before each cell: min ${Math.min(...loads).toFixed(2)}, median ${(median(loads) ?? 0).toFixed(2)}, max ${Math.max(...loads).toFixed(2)} (above ~1 means other work shared the ${os.availableParallelism()} CPUs with the bench)`)
  }
  out.push('ops/s, p50 and p99 are medians over the rounds (± is half the min-max range of ops/s over the rounds); peak RSS is the max over rounds of the measuring process\'s maxRSS.')
  out.push('"origin" is the origin requests counted during the measured windows, summed over rounds, and per client request.')
  out.push('')

  // Throughput table
  const rows: string[][] = []
  for (const size of s.sizes) {
    for (const c of s.concurrency) {
      for (const sc of THROUGHPUT_SCENARIOS) {
        const list = by.get(cellKey({ scenario: sc, size, concurrency: c, peers: 0 } as CellSpec))
        if (list === undefined) continue
        const ops = list.map((r) => r.opsPerSec)
        const reqs = list.reduce((n, r) => n + r.requests, 0)
        const origin = list.some((r) => r.originRequests === null) ? null : list.reduce((n, r) => n + (r.originRequests ?? 0), 0)
        const errors = list.reduce((n, r) => n + r.errors, 0)
        const warmed = list.map((r) => r.extra.warmupRequests).filter((n): n is number => typeof n === 'number')
        rows.push([
          sc, sizeLabel(size), String(c),
          fmtInt(median(ops) ?? 0) + spread(ops),
          fmtMs(median(list.map((r) => r.p50Ms ?? 0))),
          fmtMs(median(list.map((r) => r.p99Ms ?? 0))),
          fmtMiB(Math.max(...list.map((r) => r.maxRssBytes))),
          fmtInt(reqs),
          warmed.length === 0 ? '-' : fmtInt(median(warmed) ?? 0),
          origin === null ? '-' : `${fmtInt(origin)} (${(origin / Math.max(1, reqs)).toFixed(2)})`,
          String(errors)
        ])
      }
    }
  }
  if (rows.length > 0) {
    out.push('Throughput (undici.request, whole body read)')
    out.push('')
    out.push(table(['scenario', 'body', 'conc', 'ops/s', 'p50 ms', 'p99 ms', 'peak RSS MiB', 'requests', 'warm-up requests', 'origin (per req)', 'errors'], rows, new Set([2, 3, 4, 5, 6, 7, 8, 9, 10])))
    out.push('')
  }

  // Ratios, computed per round from cells of that round, then the median (and range) over rounds.
  const ratioDefs: Array<{ name: string, num: Scenario, den: Scenario, metric: 'ops' | 'p99' }> = [
    { name: 'local-hit / floor (ops/s)', num: 'local-hit', den: 'floor', metric: 'ops' },
    { name: 'local-hit / undici-cache (ops/s)', num: 'local-hit', den: 'undici-cache', metric: 'ops' },
    { name: 'forwarded-hit / direct (ops/s)', num: 'forwarded-hit', den: 'direct', metric: 'ops' },
    { name: 'owner-wire / direct (ops/s)', num: 'owner-wire', den: 'direct', metric: 'ops' },
    { name: 'forwarded-hit / owner-wire (ops/s)', num: 'forwarded-hit', den: 'owner-wire', metric: 'ops' },
    { name: 'hot-hit / local-hit (ops/s)', num: 'hot-hit', den: 'local-hit', metric: 'ops' },
    { name: 'miss / undici-cache-miss (ops/s)', num: 'miss', den: 'undici-cache-miss', metric: 'ops' },
    { name: 'local-hit p99 / undici-cache p99', num: 'local-hit', den: 'undici-cache', metric: 'p99' }
  ]
  const ratioRows: string[][] = []
  for (const def of ratioDefs) {
    const row = [def.name]
    for (const size of s.sizes) {
      for (const c of s.concurrency) {
        const per: number[] = []
        for (let round = 0; round < s.rounds; round++) {
          const find = (sc: Scenario): CellResult | undefined => results.find((r) => r.spec.round === round && r.spec.scenario === sc && r.spec.size === size && r.spec.concurrency === c)
          const a = find(def.num)
          const b = find(def.den)
          if (a === undefined || b === undefined) continue
          const x = def.metric === 'ops' ? a.opsPerSec / b.opsPerSec : (a.p99Ms ?? NaN) / (b.p99Ms ?? NaN)
          if (Number.isFinite(x)) per.push(x)
        }
        const m = median(per)
        row.push(m === null ? '-' : per.length > 1 ? `${fmtRatio(m)} [${fmtRatio(Math.min(...per))}-${fmtRatio(Math.max(...per))}]` : fmtRatio(m))
      }
    }
    if (row.slice(1).some((c) => c !== '-')) ratioRows.push(row)
  }
  if (ratioRows.length > 0) {
    const heads = ['ratio (median [min-max] of per-round ratios)']
    for (const size of s.sizes) for (const c of s.concurrency) heads.push(`${sizeLabel(size)} c=${c}`)
    out.push('Ratios between scenarios of this run (>1 means the first is faster, or for p99 slower)')
    out.push('')
    out.push(table(heads, ratioRows, new Set(heads.map((_, i) => i).slice(1))))
    out.push('')
  }

  // CPU per request of each process, for the scenarios that cross a process boundary.
  const cpuRows: string[][] = []
  for (const size of s.sizes) {
    for (const c of s.concurrency) {
      for (const sc of ['direct', 'owner-wire', 'forwarded-hit'] as const) {
        const list = by.get(cellKey({ scenario: sc, size, concurrency: c, peers: 0 } as CellSpec))
        if (list === undefined || !list.every((r) => typeof r.extra.clientCpuUs === 'number')) continue
        const per = (field: string): number | null => {
          if (!list.every((r) => typeof r.extra[field] === 'number')) return null
          return median(list.map((r) => Number(r.extra[field]) / Math.max(1, r.requests)))
        }
        const client = per('clientCpuUs') ?? 0
        const origin = sc === 'direct' ? per('originCpuUs') ?? 0 : 0
        const owner = sc === 'direct' ? 0 : per('ownerCpuUs') ?? 0
        cpuRows.push([sc, sizeLabel(size), String(c), client.toFixed(1), sc === 'direct' ? origin.toFixed(1) : '-', sc === 'direct' ? '-' : owner.toFixed(1), (client + origin + owner).toFixed(1)])
      }
    }
  }
  if (cpuRows.length > 0) {
    out.push('CPU time per request, microseconds (user + system, process.cpuUsage() over the measured window; medians over rounds)')
    out.push('')
    out.push(table(['scenario', 'body', 'conc', 'client (A for forwarded-hit)', 'origin', 'owner B', 'total'], cpuRows, new Set([2, 3, 4, 5, 6])))
    out.push('')
  }

  // coalesce
  const coRows: string[][] = []
  for (const sc of ['coalesce', 'coalesce-undici-cache'] as const) {
    const list = by.get(cellKey({ scenario: sc, size: KiB, concurrency: 100, peers: 0 } as CellSpec))
    if (list === undefined) continue
    coRows.push([
      sc === 'coalesce' ? 'coalesce (2 peers, 50 + 50)' : 'coalesce-undici-cache (100 on one Agent)',
      list.map((r) => String(r.originRequests ?? '-')).join(', '),
      fmtMs(median(list.map((r) => Number(r.extra.wallMs)))),
      fmtMs(median(list.map((r) => r.p50Ms ?? 0))),
      fmtMs(median(list.map((r) => r.p99Ms ?? 0))),
      sc === 'coalesce' ? list.map((r) => String(r.extra.coalescedWaits)).join(', ') : '-',
      sc === 'coalesce' ? list.map((r) => String(r.extra.forwards)).join(', ') : '-',
      String(list.reduce((n, r) => n + r.errors, 0))
    ])
  }
  if (coRows.length > 0) {
    out.push(`Coalescing: 100 concurrent requests for one cold URL, origin holds the response 50 ms (1 KiB body)`)
    out.push('')
    out.push(table(['scenario', 'origin requests (per round)', 'wall ms', 'p50 ms', 'p99 ms', 'coalescedWaits', 'forwards', 'errors'], coRows, new Set([2, 3, 4, 7])))
    out.push('')
  }

  // ring
  const ringRows: string[][] = []
  for (const peers of s.peers) {
    const list = by.get(cellKey({ scenario: 'ring', size: 0, concurrency: 1, peers } as CellSpec))
    if (list === undefined) continue
    const ops = list.map((r) => r.opsPerSec)
    ringRows.push([
      String(peers),
      fmtInt(median(ops) ?? 0) + spread(ops),
      (median(list.map((r) => Number(r.extra.nsPerCall))) ?? 0).toFixed(0),
      fmtMs(median(list.map((r) => Number(r.extra.ringBuildMs)))),
      fmtMiB(Math.max(...list.map((r) => r.maxRssBytes)))
    ])
  }
  if (ringRows.length > 0) {
    out.push('Ring: peer.ownerOf(url) on distinct URLs (URL parsing and xxHash32 included), default 160 vnodes')
    out.push('')
    out.push(table(['peers', 'ownerOf/s', 'ns/call', 'setPeers ms', 'peak RSS MiB'], ringRows, new Set([0, 1, 2, 3, 4])))
    out.push('')
  }

  // memory
  const memRows: string[][] = []
  for (const sc of ['memory', 'memory-undici-cache', 'memory-floor'] as const) {
    const list = by.get(cellKey({ scenario: sc, size: MiB, concurrency: 1, peers: 0 } as CellSpec))
    if (list === undefined) continue
    const stored = median(list.map((r) => Number(r.extra.storedBytes))) ?? 0
    const peak = Math.max(...list.map((r) => r.maxRssBytes))
    const target = 1.3 * stored + 30 * MiB
    memRows.push([
      sc === 'memory' ? 'Peer' : sc === 'memory-undici-cache' ? 'undici cache (reference)' : 'a Map of Buffers (the floor)',
      fmtMiB(stored),
      list.every((r) => typeof r.extra.entries === 'number') ? String(median(list.map((r) => Number(r.extra.entries)))) : '-',
      fmtMiB(median(list.map((r) => Number(r.extra.rssBeforeFill))) ?? 0),
      fmtMiB(median(list.map((r) => Number(r.extra.rssAfterFillGc))) ?? 0),
      fmtMiB(peak),
      `${fmtMiB(peak - (median(list.map((r) => Number(r.extra.rssBeforeFill))) ?? 0))} (${fmtRatio((peak - (median(list.map((r) => Number(r.extra.rssBeforeFill))) ?? 0)) / stored)}x)`,
      fmtMiB(target),
      fmtRatio(peak / target),
      list.map((r) => String(r.extra.refetchOriginRequests)).join(', ')
    ])
  }
  const pairCells = results.filter((r) => r.spec.scenario === 'pairs')
  if (pairCells.length > 0) {
    const cells = pairCells.map((r) => r.spec).sort((a, b) => a.size - b.size || a.concurrency - b.concurrency)
    const heads = ['pair (ratio of ops/s over all bursts [quartiles of burst ratios])', ...cells.map((c) => `${sizeLabel(c.size)} c=${c.concurrency}`)]
    const cellOf = (c: CellSpec): CellResult => pairCells.find((r) => r.spec.size === c.size && r.spec.concurrency === c.concurrency) as CellResult
    const rows: string[][] = [...PAIRS, ...SPLIT_PAIRS].map(([name]) => [name, ...cells.map((c) => {
      const x = cellOf(c).extra
      return `${fmtRatio(Number(x[`${name}|ratio`]))} [${fmtRatio(Number(x[`${name}|q1`]))}-${fmtRatio(Number(x[`${name}|q3`]))}]`
    })])
    rows.push(['ops/s of local-hit, floor', ...cells.map((c) => {
      const x = cellOf(c).extra
      return `${fmtInt(Number(x['local-hit / floor|first']))}, ${fmtInt(Number(x['local-hit / floor|second']))}`
    })])
    rows.push(['hit checks: origin fetches by the local / owner peer, forward errors, errors', ...cells.map((c) => {
      const r = cellOf(c)
      return `${String(r.extra.localHitOriginFetches)} / ${String(r.extra.ownerOriginFetches)}, ${String(r.extra.forwardErrors)}, ${r.errors}`
    })])
    const first = pairCells[0]?.extra
    out.push(`Same-process pairs: both sides of each pair in one process, taking turns in ${String(first?.bursts)} bursts of ${String(first?.burstMs)} ms each (first round only);`)
    out.push('the pairs marked "a process each" take turns the same way with each side in a helper process of its own')
    out.push('')
    out.push(table(heads, rows, new Set(heads.map((_, i) => i).slice(1))))
    out.push('')
  }
  if (memRows.length > 0) {
    out.push('Memory: 100 x 1 MiB responses stored (target: peak RSS <= 1.3 x stored + 30 MiB)')
    out.push('')
    out.push(table(['cache', 'stored MiB', 'entries', 'RSS before MiB', 'RSS after (gc) MiB', 'peak RSS MiB', 'peak - before MiB (x stored)', 'target MiB', 'peak / target', 'origin reqs on re-read'], memRows, new Set([1, 2, 3, 4, 5, 6, 7, 8, 9])))
    out.push('')
  }
  return out.join('\n')
}

async function main (): Promise<void> {
  const s = parseArgs(process.argv.slice(2))
  const results: CellResult[] = []
  const git = gitDescription()
  const started = Date.now()
  let total = 0
  for (let round = 0; round < s.rounds; round++) total += plan(s, round).length
  let done = 0
  const loads: number[] = []
  for (let round = 0; round < s.rounds; round++) {
    for (const spec of plan(s, round)) {
      const label = `${spec.scenario}${spec.scenario === 'ring' ? ` ${spec.peers} peers` : ` ${sizeLabel(spec.size)} c=${spec.concurrency}`}`
      process.stderr.write(`[${++done}/${total}] round ${round + 1}: ${label} ... `)
      loads.push(os.loadavg()[0] ?? 0)
      try {
        const r = await runCell(spec, s.nodeArgs)
        results.push(r)
        process.stderr.write(`${fmtInt(r.opsPerSec)} ops/s, p99 ${fmtMs(r.p99Ms)} ms${r.errors > 0 ? `, ${r.errors} errors` : ''}\n`)
      } catch (err) {
        process.stderr.write(`FAILED: ${(err as Error).message}\n`)
      }
    }
  }
  const text = report(s, total, results, Date.now() - started, loads, git)
  console.log('\n' + text)
  if (s.json !== null) writeFileSync(s.json, JSON.stringify({ settings: { ...s, only: s.only === null ? null : [...s.only] }, results }, null, 2))
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
