/**
 * npm run demo: a local origin and a cluster of three peers, each in its own Node process,
 * with traffic through Node's built-in fetch (setGlobalDispatcher(peer)), then a table of
 * what happened.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { setGlobalDispatcher } from 'undici'
import { Peer, type PeerStats } from '../src/index.js'

const PEERS = 3
const ASSETS = 24
const ROUNDS = 4
// Media files of 1 MiB, read by every process in ranges of 64 KiB, as players read them.
const MEDIA = 2
const MEDIA_SIZE = 1024 * 1024
const RANGE = 64 * 1024

/** A request of the demo's traffic: a URL, and a byte range of it for media. */
interface Get { url: string, range?: [number, number] }

type Message =
  | { type: 'listen' }
  | { type: 'pool', peers: string[], secret: string }
  | { type: 'traffic', gets: Get[] }
  | { type: 'stats' }
  | { type: 'exit' }

async function child (): Promise<void> {
  const server = http.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const self = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  let peer: Peer | undefined
  process.on('disconnect', () => process.exit(0))
  process.on('message', (msg: Message) => {
    void (async () => {
      if (msg.type === 'pool') {
        // Peers sign what they send each other with a shared secret.
        peer = new Peer({ self, peers: msg.peers, secret: msg.secret })
        server.on('request', peer.handler())
        await peer.ready
        setGlobalDispatcher(peer)
        process.send?.({ type: 'ready' })
      } else if (msg.type === 'traffic') {
        let failures = 0
        for (const { url, range } of msg.gets) {
          try {
            const res = await fetch(url, range === undefined ? {} : { headers: { range: `bytes=${range[0]}-${range[1]}` } })
            const body = await res.arrayBuffer()
            if (range === undefined ? !res.ok : res.status !== 206 || body.byteLength !== range[1] - range[0] + 1) failures++
          } catch {
            failures++
          }
        }
        process.send?.({ type: 'done', failures })
      } else if (msg.type === 'stats') {
        process.send?.({ type: 'stats', stats: peer?.stats() })
      } else if (msg.type === 'exit') {
        await peer?.close()
        server.close()
        process.exit(0)
      }
    })()
  })
  process.send?.({ type: 'listening', self })
}

function ask<T> (proc: ChildProcess, msg: Message, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const onMessage = (m: { type: string }): void => {
      if (m.type === reply) {
        proc.off('message', onMessage)
        resolve(m as T)
      }
    }
    proc.on('message', onMessage)
    proc.send(msg)
  })
}

async function main (): Promise<void> {
  let originRequests = 0
  const perPath = new Map<string, number>()
  const origin = http.createServer((req, res) => {
    originRequests++
    perPath.set(req.url ?? '', (perPath.get(req.url ?? '') ?? 0) + 1)
    if ((req.url ?? '').startsWith('/media/')) {
      // An origin that serves ranges itself, as media servers do.
      const media = Buffer.alloc(MEDIA_SIZE, `media ${req.url}\n`)
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
      const [start, end] = m === null ? [0, media.length - 1] : [Number(m[1]), Math.min(Number(m[2]), media.length - 1)]
      res.writeHead(m === null ? 200 : 206, {
        'content-type': 'video/mp4',
        'content-length': end - start + 1,
        'cache-control': 'public, max-age=300',
        'accept-ranges': 'bytes',
        ...(m === null ? {} : { 'content-range': `bytes ${start}-${end}/${media.length}` })
      })
      res.end(media.subarray(start, end + 1))
      return
    }
    const body = Buffer.alloc(4096, `asset ${req.url}\n`)
    const uncacheable = (req.url ?? '').startsWith('/api/')
    res.writeHead(200, {
      'content-type': 'text/plain',
      'content-length': body.length,
      'cache-control': uncacheable ? 'no-store' : 'public, max-age=300'
    })
    res.end(body)
  })
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve))
  const base = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`

  const here = fileURLToPath(import.meta.url)
  const procs = Array.from({ length: PEERS }, () => fork(here, ['peer'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  const selves = await Promise.all(procs.map((p) => new Promise<string>((resolve) => {
    p.once('message', (m: { self: string }) => resolve(m.self))
  })))
  const secret = randomBytes(24).toString('base64url')
  await Promise.all(procs.map((p) => ask(p, { type: 'pool', peers: selves, secret }, 'ready')))

  const assets = Array.from({ length: ASSETS }, (_, i) => `${base}/static/app-${i}.js`)
  const api = Array.from({ length: 4 }, (_, i) => `${base}/api/user/${i}`)
  const media = Array.from({ length: MEDIA }, (_, i) => `${base}/media/clip-${i}.mp4`)
  const started = Date.now()
  const results = await Promise.all(procs.map((p, i) => {
    // Every process asks for every asset, in its own order, several times over, and reads
    // every media file through in ranges.
    const gets: Get[] = []
    for (let r = 0; r < ROUNDS; r++) {
      for (let k = 0; k < assets.length; k++) gets.push({ url: assets[(k + i * 7 + r) % assets.length] as string })
      gets.push(...api.map((url) => ({ url })))
    }
    for (const url of media) {
      for (let at = 0; at < MEDIA_SIZE; at += RANGE) gets.push({ url, range: [at, at + RANGE - 1] })
    }
    return ask<{ failures: number }>(p, { type: 'traffic', gets }, 'done')
  }))
  const elapsed = Date.now() - started
  const stats = await Promise.all(procs.map((p) => ask<{ stats: PeerStats }>(p, { type: 'stats' }, 'stats')))
  await Promise.all(procs.map((p) => new Promise((resolve) => { p.once('exit', resolve); p.send({ type: 'exit' }) })))
  origin.close()

  const rows = stats.map((s, i) => ({
    peer: selves[i] as string,
    requests: s.stats.requests,
    'cache hits': s.stats.localHits,
    forwards: s.stats.forwards,
    'served for peers': s.stats.servedForPeers,
    'origin fetches': s.stats.originFetches,
    'cached entries': s.stats.cacheEntries,
    'cached KiB': Math.round(s.stats.cacheBytes / 1024)
  }))
  const total = rows.reduce((n, r) => n + r.requests, 0)
  const failures = results.reduce((n, r) => n + r.failures, 0)
  console.log(`\nforwardcache demo: ${PEERS} peer processes, origin ${base}, Node ${process.version}\n`)
  console.table(rows)
  const cacheableRequests = PEERS * ROUNDS * ASSETS
  const fetchesOf = (prefix: string): number => [...perPath].filter(([p]) => p.startsWith(prefix)).reduce((n, [, c]) => n + c, 0)
  const assetFetches = fetchesOf('/static/')
  const mediaFetches = fetchesOf('/media/')
  const rangeRequests = PEERS * MEDIA * (MEDIA_SIZE / RANGE)
  console.log('\ncluster')
  console.table([
    { traffic: 'cacheable assets (max-age=300)', requests: cacheableRequests, 'origin fetches': assetFetches, 'distinct URLs': ASSETS },
    { traffic: 'media read in 64 KiB ranges (max-age=300)', requests: rangeRequests, 'origin fetches': mediaFetches, 'distinct URLs': MEDIA },
    { traffic: 'no-store API calls', requests: PEERS * ROUNDS * api.length, 'origin fetches': originRequests - assetFetches - mediaFetches, 'distinct URLs': api.length },
    { traffic: 'all', requests: total, 'origin fetches': originRequests, 'distinct URLs': ASSETS + MEDIA + api.length }
  ])
  const once = assetFetches === ASSETS && mediaFetches === MEDIA
  console.log(`\n${total} requests through Node's built-in fetch in ${elapsed} ms, ${failures} failed; ` +
    `each cacheable URL reached the origin ${once ? 'exactly once for the whole cluster' : `${((assetFetches + mediaFetches) / (ASSETS + MEDIA)).toFixed(2)} times on average`} ` +
    '(a media file whole, once: its ranges are answered from it).\n')
  process.exitCode = failures === 0 && once ? 0 : 1
}

if (process.argv[2] === 'peer') {
  void child()
} else {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
