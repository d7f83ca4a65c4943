#!/usr/bin/env node
/**
 * forwardcache as a standalone process: a peer that serves the wire protocol, /metrics,
 * /healthz, and (for callers that are not written in Node) /fetch?q=URL, which routes through
 * the cluster like a Peer dispatch does.
 */
import http from 'node:http'
import { pipeline } from 'node:stream'
import { parseArgs } from 'node:util'
import { channels } from './observe/channels.js'
import { DnsDiscovery } from './discovery/dns.js'
import { targetOf } from './http-handler.js'
import { Peer } from './peer.js'
import { PeerAddresses } from './security/peer-addresses.js'
import type { PeerOptions } from './options.js'
import { normaliseOriginUrl } from './url.js'

const USAGE = `usage: forwardcache --self URL [--peers URL,URL...] [--port N] [--host ADDR] [options]

  --self URL            this peer's base URL as the other peers reach it (required)
  --peers LIST          comma-separated pool, self included (default: self)
  --dns NAME            keep the pool in sync with DNS A/AAAA records of NAME (port from --self)
  --port N              port to listen on (default: the port of --self)
  --host ADDR           address to listen on (default 0.0.0.0)
  --secret S            shared secret between peers (or env FORWARDCACHE_SECRET; a comma list rotates)
  --path P              handler path (default /proxy)
  --max-size BYTES      cache budget (default 134217728)
  --block-private       refuse origins on loopback and private ranges
  --origins LIST        comma-separated origin allowlist (hosts, *.suffix, or full origins)
  --log-level LEVEL     error | warn | info | debug (default info)
`

// This process's own routes: a handler --path may not take one of them.
const OWN_ROUTES = new Set(['/metrics', '/healthz', '/fetch'])

type Level = 'error' | 'warn' | 'info' | 'debug'
const LEVELS: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 }

function fail (message: string): never {
  process.stderr.write(`forwardcache: ${message}\n\n${USAGE}`)
  process.exit(2)
}

function main (): void {
  let parsed
  try {
    parsed = parseArgs({
      options: {
        self: { type: 'string' },
        peers: { type: 'string' },
        dns: { type: 'string' },
        port: { type: 'string' },
        host: { type: 'string' },
        secret: { type: 'string' },
        path: { type: 'string' },
        'max-size': { type: 'string' },
        'block-private': { type: 'boolean' },
        origins: { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      },
      strict: true
    })
  } catch (err) {
    fail((err as Error).message)
  }
  const v = parsed.values
  if (v.help === true) {
    process.stdout.write(USAGE)
    return
  }
  const level = (v['log-level'] ?? 'info') as Level
  // Own fields only: `in` would take toString or __proto__ for a level.
  if (!Object.hasOwn(LEVELS, level)) fail(`unknown log level ${level}`)
  const log = (at: Level, msg: string, fields: Record<string, unknown> = {}): void => {
    if (LEVELS[at] > LEVELS[level]) return
    process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level: at, msg, ...fields }) + '\n')
  }

  if (v.self === undefined) fail('--self is required')
  let selfUrl: URL
  try {
    selfUrl = new URL(v.self)
  } catch {
    fail(`--self is not a URL: ${v.self}`)
  }
  // Decimal digits only: Number() would read '' as 0 (a random port, not the one --self
  // advertises) and also take 0x50 or 1e3.
  if (v.port !== undefined && !/^\d{1,5}$/.test(v.port)) fail(`bad --port ${v.port}: expected a decimal port number`)
  const port = v.port !== undefined ? Number(v.port) : Number(selfUrl.port || (selfUrl.protocol === 'https:' ? 443 : 80))
  if (port > 65535) fail(`bad --port ${String(v.port)}`)
  // The other peers send their requests under the path of --self (a proxy in front may route
  // /cache/... here without stripping it): it is taken off before the handler sees them.
  const basePath = selfUrl.pathname.replace(/\/+$/, '')
  const secret = v.secret ?? process.env.FORWARDCACHE_SECRET
  const options: PeerOptions = { self: v.self }
  if (v.peers !== undefined) options.peers = v.peers.split(',').map((p) => p.trim()).filter((p) => p !== '')
  if (secret !== undefined && secret !== '') options.secret = secret.includes(',') ? secret.split(',') : secret
  if (v.path !== undefined) {
    if (OWN_ROUTES.has(v.path.replace(/\/+$/, ''))) fail(`--path ${v.path} is one of this process's own routes (/metrics, /healthz, /fetch)`)
    options.path = v.path
  }
  if (v['max-size'] !== undefined) {
    if (!/^\d{1,16}$/.test(v['max-size'])) fail(`bad --max-size ${v['max-size']}: expected a number of bytes`)
    options.maxSize = Number(v['max-size'])
  }
  if (v['block-private'] === true) options.blockPrivateOrigins = true
  if (v.origins !== undefined) options.origins = v.origins.split(',').map((o) => o.trim())

  let peer: Peer
  try {
    peer = new Peer(options)
  } catch (err) {
    fail((err as Error).message)
  }
  process.on('warning', (w) => log('warn', w.message, { code: (w as Error & { code?: string }).code }))
  channels.forwardError.subscribe((m) => {
    const msg = m as { url: string, owner: string, error: Error }
    log('warn', 'forward failed; served from the origin', { url: msg.url, owner: msg.owner, error: msg.error.message })
  })
  if (level === 'debug') {
    channels.hit.subscribe((m) => log('debug', 'hit', m as Record<string, unknown>))
    channels.miss.subscribe((m) => log('debug', 'miss', m as Record<string, unknown>))
    channels.forward.subscribe((m) => log('debug', 'forward', m as Record<string, unknown>))
  }

  const handler = peer.handler()
  const fetchers = new PeerAddresses()
  const refreshFetchers = (): void => fetchers.update(peer.peers)
  refreshFetchers()
  // Responses still being written: peer.close() resolves once the peer has handed the last
  // byte to a response (handler()'s res.end(), the Readable of a /fetch), not once node:http
  // has written it out, so leaving at that point cut off what was still buffered (a slow
  // caller's /fetch ended short, yet the command exited 0). Shutdown waits for these too.
  const responses = new Set<http.ServerResponse>()
  let stopping = false
  let responsesDone: (() => void) | undefined
  const server = http.createServer((req, res) => {
    responses.add(res)
    res.on('close', () => {
      responses.delete(res)
      // Keep-alive connections that go idle while draining are closed, now that nothing of
      // theirs is left to write.
      if (stopping) server.closeIdleConnections()
      if (responses.size === 0) responsesDone?.()
    })
    if (basePath !== '' && req.url?.startsWith(basePath + '/') === true) req.url = req.url.slice(basePath.length)
    const path = (req.url ?? '/').split('?')[0]
    if (path === '/metrics' && req.method === 'GET') {
      const body = peer.metrics()
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(body) })
      res.end(body)
      return
    }
    if (path === '/healthz') {
      const closing = peer.closed
      res.writeHead(closing ? 503 : 200, { 'content-type': 'text/plain' })
      res.end(closing ? 'closing\n' : 'ok\n')
      return
    }
    if (path === '/fetch' && (req.method === 'GET' || req.method === 'HEAD')) {
      // /fetch fetches any URL for whoever asks: only loopback and the pool's own addresses.
      fetchers.allows(req.socket.remoteAddress).then((allowed) => {
        if (allowed) return fetchThrough(req, res)
        res.writeHead(403, { 'content-type': 'text/plain' })
        res.end('/fetch serves loopback and the pool only\n')
      }, () => { res.writeHead(500); res.end() })
      return
    }
    handler(req, res)
  })

  const fetchThrough = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    {
      const method = req.method === 'HEAD' ? 'HEAD' : 'GET'
      // As the handler reads the peers' q: everything after the first ?, so that a URL sent
      // without encoding keeps its own query.
      const requestTarget = req.url ?? ''
      const start = requestTarget.indexOf('?')
      const q = start === -1 ? null : targetOf(requestTarget.slice(start + 1))
      let target: URL
      try {
        // The checks every other way in makes: http(s) only, no credentials, no control
        // characters that a bare URL parse would drop without a word.
        target = normaliseOriginUrl(q ?? '')
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' })
        res.end(q === null ? 'missing q\n' : `bad q: ${(err as Error).message}\n`)
        return
      }
      // Routed like a Peer dispatch: to the owner, or this peer's cache.
      peer.request({
        origin: target.origin,
        path: target.pathname + target.search,
        method,
        headers: Object.fromEntries(Object.entries(req.headers).filter(([k]) => k !== 'host' && k !== 'connection'))
      }).then(({ statusCode, headers, body }) => {
        res.writeHead(statusCode, headers as http.OutgoingHttpHeaders)
        pipeline(body, res, () => {})
      }, (err: Error) => {
        res.writeHead(502, { 'content-type': 'text/plain' })
        res.end(`${err.message}\n`)
      })
    }
  }

  // node:http's closeIdleConnections (which server.close() calls as well, since Node 19) takes
  // a connection for idle once its response has been end()ed, and destroys it even while part
  // of that response is still buffered for a slow reader: SIGTERM cut the end off such a
  // body. It runs only when every ended response has been written out; the 'close' of each
  // response runs it again.
  const closeIdle = server.closeIdleConnections.bind(server)
  server.closeIdleConnections = () => {
    for (const res of responses) if (res.writableEnded && !res.writableFinished) return
    closeIdle()
  }

  let discovery: DnsDiscovery | undefined
  // A port in use or an address this host does not have (--port, --host, the port of --self):
  // without a listener, node:http throws the 'error' event out of the event loop, a stack trace
  // instead of a log line.
  server.on('error', (err) => {
    log('error', 'server failed', { error: err.message })
    peer.destroy().finally(() => process.exit(1))
  })
  server.listen(port, v.host ?? '0.0.0.0', () => {
    const address = server.address()
    const bound = typeof address === 'object' && address !== null ? address.port : port
    log('info', 'listening', { self: peer.self, port: bound, peers: peer.peers, authenticated: secret !== undefined && secret !== '' })
    if (v.dns !== undefined) {
      // The pool's addresses may use /fetch: keep them in step with every pool change.
      const target = {
        setPeers: (peers: readonly string[]) => { peer.setPeers(peers); refreshFetchers() },
        get peers () { return peer.peers },
        self: peer.self
      }
      discovery = new DnsDiscovery(target, {
        name: v.dns,
        // The peers' URLs carry the path of --self as this one's does: without it, DNS gave
        // `http://ip:port` for every peer while self stayed `http://ip:port/cache`, a pool
        // that listed this peer twice and sent the others' keys to the wrong path.
        basePath,
        port: Number(selfUrl.port || (selfUrl.protocol === 'https:' ? 443 : 80)),
        protocol: selfUrl.protocol === 'https:' ? 'https' : 'http',
        onError: (err) => log('warn', 'dns discovery failed; keeping the pool', { error: err.message })
      })
      discovery.start().then((peers) => {
        refreshFetchers()
        log('info', 'pool from dns', { peers })
      }, (err: Error) => log('error', 'dns discovery failed; retrying on the interval', { error: err.message }))
    }
  })

  const shutdown = (signal: string): void => {
    if (stopping) return
    stopping = true
    log('info', 'shutting down', { signal })
    discovery?.stop()
    // Stop accepting, let in-flight requests finish, then leave.
    server.close()
    server.closeIdleConnections()
    const drained = new Promise<void>((resolve) => {
      if (responses.size === 0) resolve()
      else responsesDone = resolve
    })
    Promise.all([peer.close(), drained]).then(() => {
      log('info', 'stopped', { stats: { requests: peer.stats().requests, servedForPeers: peer.stats().servedForPeers } })
      process.exit(0)
    }, () => process.exit(1))
    setTimeout(() => process.exit(1), 10_000).unref()
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
}

main()
