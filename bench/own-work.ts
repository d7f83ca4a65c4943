/**
 * Each peer's own work per forwarded hit, with the network left out of the figure. The
 * throughput of a forwarded hit with one request in flight is the sum of two processes' CPU
 * and their wake-ups, and on a shared 2-core host the same case differs by more from one
 * burst to the next than the library costs (forward-split.ts, bench/README.md "What each
 * peer does per forwarded hit"). So:
 *
 * - the owner B: a Peer's handler() on a node:http server in this process, serving a warm
 *   hit, timed from the 'request' event until it returns (a hit is written whole by then),
 *   less the time node:http's own writeHead() and end() take (they hold the write syscall).
 *   The same timing of a handler that writes B's exact status, fields and body with no other
 *   work is the baseline;
 * - the forwarding peer A: CPU per request of `undici.request()` through a Peer A that owns
 *   nothing, against an undici Agent, both with undici's Pool answering in this process, on a
 *   microtask, with B's raw answer (Pool.prototype.dispatch is replaced for that part only).
 *   What is left is A's routing, forwarding and passing the answer on.
 *
 * Both sides alternate in bursts; the figures are medians over the bursts.
 *
 *   node dist/bench/own-work.js [--size=1024] [--bursts=20] [--burst=2000]
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Agent, Pool, request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { DEFAULT_PATH } from '../src/options.js'
import { Helper, cpuMicros, hitUrls, intOption, median } from './common.js'

type Listener = (req: IncomingMessage, res: ServerResponse) => void

/** Times a request listener less node:http's writeHead() and end(), per request, in ns. */
class TimedListener {
  requests = 0
  ownNs = 0n
  readonly listener: Listener

  constructor (inner: Listener) {
    const timedCall = (fn: (...a: unknown[]) => unknown, self: unknown, args: unknown[]): unknown => {
      const start = process.hrtime.bigint()
      try {
        return fn.apply(self, args)
      } finally {
        node += process.hrtime.bigint() - start
      }
    }
    let node = 0n
    this.listener = (req, res) => {
      const patched = res as unknown as { writeHead: (...a: unknown[]) => unknown, end: (...a: unknown[]) => unknown }
      const writeHead = patched.writeHead
      const end = patched.end
      patched.writeHead = function (this: unknown, ...args: unknown[]) { return timedCall(writeHead, this, args) }
      patched.end = function (this: unknown, ...args: unknown[]) { return timedCall(end, this, args) }
      node = 0n
      const start = process.hrtime.bigint()
      inner(req, res)
      this.ownNs += process.hrtime.bigint() - start - node
      this.requests++
    }
  }

  /** Own time per request since the last call, µs, and starts counting again. */
  take (): number {
    const us = Number(this.ownNs) / 1000 / Math.max(1, this.requests)
    this.ownNs = 0n
    this.requests = 0
    return us
  }
}

async function listen (listener: Listener): Promise<{ server: http.Server, url: string }> {
  const server = http.createServer(listener)
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

async function get (url: string, dispatcher: Dispatcher): Promise<void> {
  const res = await request(url, { dispatcher })
  for await (const chunk of res.body) void chunk
  if (res.statusCode !== 200) throw new Error(`${url} answered ${res.statusCode}`)
}

async function repeat (n: number, url: string, dispatcher: Dispatcher): Promise<void> {
  for (let i = 0; i < n; i++) await get(url, dispatcher)
}

async function main (): Promise<void> {
  const size = intOption('size', 1024)
  const bursts = intOption('bursts', 20)
  const burst = intOption('burst', 2000)
  const closing: Array<() => Promise<unknown>> = []
  const origin = await Helper.start('origin')
  try {
    const target = hitUrls(origin.url, size, 'own')[0] as string
    const wirePath = `${DEFAULT_PATH}?q=${encodeURIComponent(target)}`

    // The owner B, in this process.
    let owner: Listener = () => {}
    const timedOwner = new TimedListener((req, res) => owner(req, res))
    const b = await listen(timedOwner.listener)
    closing.push(async () => await new Promise((resolve) => b.server.close(resolve)))
    const peerB = new Peer({ self: b.url, peers: [b.url], hotSize: 0 })
    closing.push(() => peerB.destroy())
    owner = peerB.handler()
    await peerB.ready
    const agent = new Agent()
    closing.push(() => agent.destroy())
    const answer = await agent.request({ origin: b.url, path: wirePath, method: 'GET' })
    await answer.body.arrayBuffer()
    if (answer.statusCode !== 200) throw new Error(`B answered ${answer.statusCode}`)

    // B's answer, for the fixed handler and for the Pool stand-in. Cache-Status and Age come
    // from the stored response and the clock: the fixed handler writes the same fields.
    const headers: Record<string, string> = {}
    for (const [name, value] of Object.entries(answer.headers)) {
      if (name !== 'connection' && name !== 'keep-alive' && typeof value === 'string') headers[name] = value
    }
    const body = Buffer.alloc(size, 'forwardcache bench body\n')
    const timedFixed = new TimedListener((_req, res) => {
      res.writeHead(200, headers)
      res.end(body)
    })
    const fixed = await listen(timedFixed.listener)
    closing.push(async () => await new Promise((resolve) => fixed.server.close(resolve)))

    const ownerCases = [
      { name: 'B', url: `${b.url}${wirePath}`, timed: timedOwner, us: [] as number[] },
      { name: 'fixed', url: `${fixed.url}${wirePath}`, timed: timedFixed, us: [] as number[] }
    ]
    for (const c of ownerCases) await repeat(5 * burst, c.url, agent)
    // Every measured request must be a hit answered inside the request event: a miss would be
    // timed only up to its first await.
    const fetchedBefore = peerB.stats().originFetches
    for (let k = 0; k < bursts; k++) {
      for (const c of k % 2 === 0 ? ownerCases : [...ownerCases].reverse()) {
        c.timed.take()
        await repeat(burst, c.url, agent)
        c.us.push(c.timed.take())
      }
    }
    if (peerB.stats().originFetches !== fetchedBefore) throw new Error('B went to the origin while measured')

    // The forwarding peer A, with undici's Pool answering B's raw answer in this process.
    const raw: Buffer[] = []
    for (const [name, value] of Object.entries({ ...headers, connection: 'keep-alive', 'keep-alive': 'timeout=60' })) {
      raw.push(Buffer.from(name), Buffer.from(value))
    }
    const poolDispatch = Object.getOwnPropertyDescriptor(Pool.prototype, 'dispatch')
    type Legacy = { onConnect?: (abort: () => void) => void, onHeaders: (s: number, h: Buffer[], resume: () => void, t: string) => boolean, onData: (c: Buffer) => boolean, onComplete: (t: Buffer[]) => void }
    type Current = Dispatcher.DispatchHandler & { onResponseStart: NonNullable<Dispatcher.DispatchHandler['onResponseStart']> }
    const answerInProcess = (_opts: Dispatcher.DispatchOptions, handler: Legacy | Current): boolean => {
      queueMicrotask(() => {
        if ('onHeaders' in handler && typeof handler.onHeaders === 'function') {
          // undici's legacy contract, which A's forwards and request() use.
          const legacy = handler as Legacy
          legacy.onConnect?.(() => {})
          legacy.onHeaders(200, raw.map((x) => x.subarray()), () => {}, 'OK')
          legacy.onData(body)
          legacy.onComplete([])
          return
        }
        const h = handler as Current
        const ctl = { pause () {}, resume () {}, abort () {}, aborted: false, paused: false, reason: null } as unknown as Dispatcher.DispatchController
        h.onRequestStart?.(ctl, {})
        h.onResponseStart(ctl, 200, { ...headers, connection: 'keep-alive', 'keep-alive': 'timeout=60' }, 'OK')
        h.onResponseData?.(ctl, body)
        h.onResponseEnd?.(ctl, {})
      })
      return true
    }
    Object.defineProperty(Pool.prototype, 'dispatch', { value: answerInProcess, configurable: true, writable: true })
    const forwarderCases: Array<{ name: string, url: string, dispatcher: Dispatcher, us: number[] }> = []
    try {
      const self = 'http://127.0.0.1:1'
      const other = 'http://127.0.0.1:2'
      const peerA = new Peer({ self, peers: [self, other], hotSize: 0 })
      closing.push(() => peerA.destroy())
      await peerA.ready
      let owned = target
      for (let k = 0; peerA.ownerOf(owned) !== other; k++) owned = hitUrls(origin.url, size, `own${k}`)[0] as string
      const standIn = new Agent()
      closing.push(() => standIn.destroy())
      forwarderCases.push(
        { name: 'Agent', url: `${other}${wirePath}`, dispatcher: standIn, us: [] },
        { name: 'A', url: owned, dispatcher: peerA, us: [] }
      )
      for (const c of forwarderCases) await repeat(10 * burst, c.url, c.dispatcher)
      for (let k = 0; k < bursts; k++) {
        for (const c of k % 2 === 0 ? forwarderCases : [...forwarderCases].reverse()) {
          const start = cpuMicros()
          await repeat(burst, c.url, c.dispatcher)
          c.us.push((cpuMicros() - start) / burst)
        }
      }
      if (peerA.stats().forwards === 0) throw new Error('Peer A forwarded nothing')
    } finally {
      if (poolDispatch !== undefined) Object.defineProperty(Pool.prototype, 'dispatch', poolDispatch)
      else delete (Pool.prototype as unknown as Record<string, unknown>).dispatch
    }

    const m = (xs: number[]): number => median(xs) ?? NaN
    const [bCase, fixedCase] = ownerCases as [typeof ownerCases[number], typeof ownerCases[number]]
    const [agentCase, aCase] = forwarderCases as [typeof forwarderCases[number], typeof forwarderCases[number]]
    console.log(`own-work: Node ${process.version}, ${size} bytes, one request in flight, ${bursts} bursts of ${burst} requests per case, taking turns`)
    console.log('')
    console.log('| peer | what is timed | with forwardcache µs | baseline µs | own work µs per hit |')
    console.log('| --- | --- | ---: | ---: | ---: |')
    console.log(`| owner B | handler() for a hit, less node:http's writeHead/end; baseline: a handler writing B's answer | ${m(bCase.us).toFixed(2)} | ${m(fixedCase.us).toFixed(2)} | ${(m(bCase.us) - m(fixedCase.us)).toFixed(2)} |`)
    console.log(`| forwarding A | CPU per request() with undici's Pool answering in-process; baseline: an Agent | ${m(aCase.us).toFixed(2)} | ${m(agentCase.us).toFixed(2)} | ${(m(aCase.us) - m(agentCase.us)).toFixed(2)} |`)
  } finally {
    for (const close of closing.reverse()) await close().catch(() => {})
    origin.stop()
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
