/**
 * A helper process of the bench, forked by a scenario runner (dist/bench/helper.js ROLE):
 *
 * - `origin`: a loopback node:http origin that counts the requests it receives. It answers
 *   `/o/{bytes}/{holdMs}/{anything}` with 200, `Cache-Control: public, max-age=3600`, an exact
 *   Content-Length and a body of `bytes` bytes, after holding the response `holdMs` ms.
 *   Commands: `count` (requests since the last reset), `reset`.
 * - `peer`: a forwardcache Peer behind `http.createServer(peer.handler())`, the owner in the
 *   forwarded-hit and hot-hit scenarios. Commands: `init` ({ peers, secret }), `stats`, `cpu`.
 * - `fixed`: a node:http server that answers every request with the status 200, fields and
 *   body it was given (`init` { headers, size }), doing nothing else: the owner B's exact bytes
 *   at no cost, for bench/forward-split. Commands: `init`, `cpu`.
 * - `side`: one side of a split pair (SPLIT_PAIRS), in a heap of its own. Commands: `init`
 *   (a SideInit), `burst` ({ ms }: the request loop for that long, answered with its Tally).
 *   It does not listen; its hello carries an empty url.
 *
 * It reports `{ hello: true, url }` once listening, and exits when its parent disconnects.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { Agent, interceptors, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { ORIGIN_CACHE_CONTROL, cpuMicros, originPath, type HelperReply, type HelperRequest, type SideInit, type Tally } from './common.js'
import { load, setReadMode } from './load.js'

const bodies = new Map<number, Buffer>()

function bodyOf (size: number): Buffer {
  let b = bodies.get(size)
  if (b === undefined) {
    b = Buffer.alloc(size, 'forwardcache bench body\n')
    bodies.set(size, b)
  }
  return b
}

async function listen (server: http.Server): Promise<string> {
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

type Commands = Record<string, (args: unknown) => unknown>

function serveCommands (commands: Commands): void {
  process.on('message', (m: HelperRequest) => {
    void (async () => {
      let reply: HelperReply
      try {
        const fn = commands[m.cmd]
        if (fn === undefined) throw new Error(`unknown command ${m.cmd}`)
        reply = { id: m.id, ok: true, result: await fn(m.args) }
      } catch (err) {
        reply = { id: m.id, ok: false, error: (err as Error).stack ?? String(err) }
      }
      process.send?.(reply)
    })()
  })
}

async function origin (): Promise<void> {
  let count = 0
  const server = http.createServer((req, res) => {
    count++
    const parts = (req.url ?? '/').split('/')
    // ['', 'o', bytes, holdMs, ...]
    if (parts[1] !== 'o' || parts.length < 5) {
      res.writeHead(404, { 'content-length': '0' })
      res.end()
      return
    }
    const size = Number(parts[2])
    const hold = Number(parts[3])
    if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(hold) || hold < 0) {
      res.writeHead(400, { 'content-length': '0' })
      res.end()
      return
    }
    const body = bodyOf(size)
    const send = (): void => {
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': String(body.length),
        'cache-control': ORIGIN_CACHE_CONTROL,
        etag: `"${size}"`
      })
      res.end(body)
    }
    if (hold > 0) setTimeout(send, hold)
    else send()
  })
  const url = await listen(server)
  serveCommands({
    count: () => count,
    reset: () => { count = 0; return 0 },
    cpu: cpuMicros
  })
  process.send?.({ hello: true, url })
}

async function peer (): Promise<void> {
  const server = http.createServer()
  const self = await listen(server)
  let p: Peer | undefined
  serveCommands({
    init: async (args) => {
      const { peers, secret } = args as { peers: string[], secret: string }
      p = new Peer(secret === '' ? { self, peers } : { self, peers, secret })
      server.on('request', p.handler())
      await p.ready
      return self
    },
    stats: () => p?.stats(),
    cpu: cpuMicros
  })
  process.send?.({ hello: true, url: self })
}

async function fixed (): Promise<void> {
  let headers: Record<string, string> = {}
  let body: Buffer = Buffer.alloc(0)
  const server = http.createServer((_req, res) => {
    res.writeHead(200, headers)
    res.end(body)
  })
  const url = await listen(server)
  serveCommands({
    init: (args) => {
      const a = args as { headers: Record<string, string>, size: number }
      headers = a.headers
      body = bodyOf(a.size)
      return true
    },
    cpu: cpuMicros
  })
  process.send?.({ hello: true, url })
}

async function side (): Promise<void> {
  let burst: ((ms: number) => Promise<Tally>) | undefined
  serveCommands({
    init: async (args) => {
      const { side, origin, size, concurrency, read } = args as SideInit
      setReadMode(read)
      let dispatcher: Dispatcher
      if (side === 'miss') {
        // The only member of its pool: it owns every URL.
        const p = new Peer({ self: 'http://127.0.0.1:1' })
        await p.ready
        dispatcher = p
      } else {
        dispatcher = new Agent().compose(interceptors.cache({ type: 'shared' }))
      }
      let i = 0
      const next = (): string => `${origin}${originPath(size, 0, `${side}-${i++}`)}`
      burst = async (ms) => {
        const r = await load(dispatcher, next, size, concurrency, ms)
        return { requests: r.requests, ms: r.elapsedMs, errors: r.errors }
      }
      return true
    },
    burst: async (args) => {
      if (burst === undefined) throw new Error('burst before init')
      return await burst((args as { ms: number }).ms)
    }
  })
  process.send?.({ hello: true, url: '' })
}

process.on('disconnect', () => process.exit(0))
// A clean exit on SIGTERM too, so that --cpu-prof (FORWARDCACHE_BENCH_HELPER_ARGS) writes its profile.
process.on('SIGTERM', () => process.exit(0))
const role = process.argv[2]
if (role === 'origin') void origin()
else if (role === 'peer') void peer()
else if (role === 'side') void side()
else if (role === 'fixed') void fixed()
else {
  console.error(`unknown helper role ${String(role)}`)
  process.exit(2)
}
