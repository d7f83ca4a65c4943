/**
 * Where the cost of a forwarded hit goes, with one request in flight (bench/README.md,
 * "forwarded-hit with one request in flight"). Five cases take turns in short bursts, in one
 * process, against servers in processes of their own:
 *
 * - `direct`: an undici Agent to the origin (the bench's origin: four fields, no work);
 * - `wire to B`: the Agent speaking the wire protocol to the owner B's handler (a warm cache);
 * - `wire to fixed`: the same request to a server that answers with B's exact status, fields
 *   and body, and does nothing else;
 * - `A -> B`: a Peer A in this process forwarding to B;
 * - `A -> fixed`: Peer A forwarding to the fixed server.
 *
 * So `wire to fixed` / `direct` is what the wire protocol itself costs (a longer request line,
 * three more response fields), `wire to B` / `wire to fixed` what B's handler and cache cost,
 * and `A -> fixed` / `wire to fixed` what A's routing costs. CPU per request (user + system,
 * process.cpuUsage) is given for this process and for the server of each case; this
 * process's is split into its main thread and the rest (V8's garbage-collector threads,
 * mostly) where /proc has it, with its major garbage collections per 100 requests ("At 1 MiB
 * on Node 24 the difference is the garbage collector").
 *
 *   node dist/bench/forward-split.js [--size=1024] [--bursts=30] [--burst=100]
 */
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks'
import { Agent, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { DEFAULT_PATH } from '../src/options.js'
import { Helper, cpuMicros, hitUrls, intOption, mainThreadCpuMicros } from './common.js'
import { load } from './load.js'

interface Case { name: string, dispatcher: Dispatcher, urls: string[], server: Helper }

async function main (): Promise<void> {
  const size = intOption('size', 1024)
  const bursts = intOption('bursts', 30)
  const burstMs = intOption('burst', 100)
  const helpers: Helper[] = []
  const closing: Array<() => Promise<void>> = []
  try {
    const origin = await Helper.start('origin')
    helpers.push(origin)
    const owner = await Helper.start('peer')
    helpers.push(owner)
    await owner.call('init', { peers: [owner.url], secret: '' })
    const fixed = await Helper.start('fixed')
    helpers.push(fixed)
    const agent = new Agent()
    closing.push(() => agent.destroy())
    const wire = (base: string, url: string): string => `${base}${DEFAULT_PATH}?q=${encodeURIComponent(url)}`

    // Peer A in this process, in a pool with the other side, and the URLs that side owns.
    const self = 'http://127.0.0.1:1'
    const peerWith = async (other: string): Promise<{ a: Peer, urls: string[] }> => {
      const a = new Peer({ self, peers: [self, other], hotSize: 0 })
      closing.push(() => a.destroy())
      await a.ready
      const urls: string[] = []
      for (let k = 0; urls.length < 8; k++) {
        for (const u of hitUrls(origin.url, size, `split${k}`)) if (a.ownerOf(u) === other && urls.length < 8) urls.push(u)
      }
      return { a, urls }
    }
    const toOwner = await peerWith(owner.url)
    const toFixed = await peerWith(fixed.url)

    // B warm for every URL it is asked for, and its answer's fields copied onto the fixed server.
    let headers: Record<string, string> = {}
    for (const u of [...toOwner.urls, ...toFixed.urls]) {
      for (let i = 0; i < 2; i++) {
        const res = await agent.request({ origin: owner.url, path: wire('', u), method: 'GET' })
        await res.body.arrayBuffer()
        if (res.statusCode !== 200) throw new Error(`owner answered ${res.statusCode} for ${u}`)
        headers = {}
        for (const [name, value] of Object.entries(res.headers)) {
          if (name !== 'connection' && name !== 'keep-alive' && typeof value === 'string') headers[name] = value
        }
      }
    }
    await fixed.call('init', { headers, size })

    const cases: Case[] = [
      { name: 'direct (Agent -> origin)', dispatcher: agent, urls: toOwner.urls, server: origin },
      { name: 'wire to B (Agent -> B)', dispatcher: agent, urls: toOwner.urls.map((u) => wire(owner.url, u)), server: owner },
      { name: 'wire to fixed (B\'s bytes, no work)', dispatcher: agent, urls: toOwner.urls.map((u) => wire(fixed.url, u)), server: fixed },
      { name: 'A -> B (forwarded-hit)', dispatcher: toOwner.a, urls: toOwner.urls, server: owner },
      { name: 'A -> fixed', dispatcher: toFixed.a, urls: toFixed.urls, server: fixed }
    ]
    const totals = cases.map(() => ({ requests: 0, errors: 0, ms: 0, clientCpu: 0, mainCpu: 0, serverCpu: 0, majorGcs: 0 }))
    const next = (urls: string[]): () => string => { let i = 0; return () => urls[i++ % urls.length] as string }
    for (const c of cases) await load(c.dispatcher, next(c.urls), size, 1, 300)
    // Major collections are reported after the fact: each is given to the burst it started in.
    const windows: Array<{ from: number, to: number, caseIndex: number }> = []
    const majors: number[] = []
    const gcs = new PerformanceObserver((list) => {
      for (const e of list.getEntries() as Array<PerformanceEntry & { detail?: { kind?: number } }>) {
        if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors.push(e.startTime)
      }
    })
    gcs.observe({ entryTypes: ['gc'] })
    let threadsKnown = mainThreadCpuMicros() !== undefined
    for (let b = 0; b < bursts; b++) {
      for (let i = 0; i < cases.length; i++) {
        const c = cases[i] as Case
        const t = totals[i] as typeof totals[number]
        const server0 = await c.server.call<number>('cpu')
        const main0 = mainThreadCpuMicros()
        const client0 = cpuMicros()
        const from = performance.now()
        const r = await load(c.dispatcher, next(c.urls), size, 1, burstMs)
        windows.push({ from, to: performance.now(), caseIndex: i })
        t.clientCpu += cpuMicros() - client0
        const main1 = mainThreadCpuMicros()
        if (main0 !== undefined && main1 !== undefined) t.mainCpu += main1 - main0
        else threadsKnown = false
        t.serverCpu += await c.server.call<number>('cpu') - server0
        t.requests += r.requests
        t.errors += r.errors
        t.ms += r.elapsedMs
      }
    }
    // The observer's last entries come on a later turn.
    await new Promise((resolve) => setTimeout(resolve, 50))
    gcs.disconnect()
    for (const at of majors) {
      const burst = windows.find((x) => at >= x.from && at < x.to)
      if (burst !== undefined) (totals[burst.caseIndex] as typeof totals[number]).majorGcs++
    }
    const base = (totals[0] as typeof totals[number])
    const baseRate = base.requests / base.ms
    console.log(`forward-split: Node ${process.version}, ${size} bytes, one request in flight, ${bursts} bursts of ${burstMs} ms per case, taking turns`)
    console.log('')
    console.log('| case | ops/s | / direct | client CPU µs/request | of it, main thread | other threads | major GCs / 100 requests | server CPU µs/request | errors |')
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    cases.forEach((c, i) => {
      const t = totals[i] as typeof totals[number]
      const rate = t.requests / t.ms
      const perRequest = (micros: number): string => (micros / t.requests).toFixed(1)
      const threads = threadsKnown ? `${perRequest(t.mainCpu)} | ${perRequest(t.clientCpu - t.mainCpu)}` : '- | -'
      console.log(`| ${c.name} | ${Math.round(rate * 1000).toLocaleString('en-US')} | ${(rate / baseRate).toFixed(2)} | ${perRequest(t.clientCpu)} | ${threads} | ${(t.majorGcs * 100 / t.requests).toFixed(2)} | ${perRequest(t.serverCpu)} | ${t.errors} |`)
    })
    if (threadsKnown) console.log('\nThe main thread\'s CPU is read in 10 ms clock ticks: only its sum over all bursts means anything.')
  } finally {
    for (const close of closing.reverse()) await close().catch(() => {})
    for (const h of helpers) h.stop()
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
