import { createHmac, randomBytes } from 'node:crypto'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { Peer, type PeerOptions } from '../../src/index.js'
import { listen, stopServer } from './peers.js'

/**
 * Helpers for the hostile-input tests: a canary that must never be reached, a raw-socket HTTP
 * client that sends exactly the bytes it is given, and a signature forger.
 */

/** An http server on loopback that counts every TCP connection it accepts. */
export interface Canary {
  readonly host: string
  readonly port: number
  /** A base URL for the canary, e.g. http://127.0.0.1:1234 or http://[::1]:1234. */
  readonly url: string
  connections (): number
  close (): Promise<void>
}

export async function startCanary (host = '127.0.0.1'): Promise<Canary> {
  let connections = 0
  const server = http.createServer((_req, res) => {
    // Looks like a juicy, cacheable answer: if it ever reaches a caller, tests see it.
    res.writeHead(200, { 'cache-control': 'public, max-age=600', 'content-type': 'text/plain' })
    res.end('CANARY: internal service reached\n')
  })
  server.on('connection', () => { connections++ })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => resolve())
  })
  const { port } = server.address() as AddressInfo
  return {
    host,
    port,
    url: `http://${net.isIPv6(host) ? `[${host}]` : host}:${port}`,
    connections: () => connections,
    close: () => stopServer(server)
  }
}

/** What a raw request got back. */
export type RawOutcome =
  | { kind: 'response', status: number, head: string, headers: Record<string, string>, body: string, closedAfter: boolean }
  | { kind: 'closed', bytes: number }
  | { kind: 'hung' }

interface Parsed { status: number, head: string, headers: Record<string, string>, body: string, rest: Buffer }

/** Parses one complete HTTP/1.1 response off the front of `buf`, or returns undefined. */
function parseResponse (buf: Buffer, headRequest: boolean, ended: boolean): Parsed | undefined {
  const end = buf.indexOf('\r\n\r\n')
  if (end === -1) return undefined
  const head = buf.subarray(0, end).toString('latin1')
  const lines = head.split('\r\n')
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')
  if (m === null) return undefined
  const status = Number(m[1])
  const headers: Record<string, string> = {}
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':')
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
  }
  let rest = buf.subarray(end + 4)
  if (status < 200 || status === 204 || status === 304 || headRequest) {
    return { status, head, headers, body: '', rest }
  }
  const cl = headers['content-length']
  if (cl !== undefined) {
    const n = Number(cl)
    if (rest.length < n) return undefined
    return { status, head, headers, body: rest.subarray(0, n).toString('latin1'), rest: rest.subarray(n) }
  }
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts: Buffer[] = []
    for (;;) {
      const lineEnd = rest.indexOf('\r\n')
      if (lineEnd === -1) return undefined
      const size = parseInt(rest.subarray(0, lineEnd).toString('latin1'), 16)
      if (Number.isNaN(size)) return undefined
      if (rest.length < lineEnd + 2 + size + 2) return undefined
      if (size === 0) {
        const trailerEnd = rest.indexOf('\r\n', lineEnd + 2)
        if (trailerEnd === -1) return undefined
        return { status, head, headers, body: Buffer.concat(parts).toString('latin1'), rest: rest.subarray(trailerEnd + 2) }
      }
      parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size))
      rest = rest.subarray(lineEnd + 2 + size + 2)
    }
  }
  // No framing: the body runs to the end of the connection.
  if (!ended) return undefined
  return { status, head, headers, body: rest.toString('latin1'), rest: Buffer.alloc(0) }
}

/**
 * Sends `bytes` on a fresh TCP connection to 127.0.0.1:`port` and reports the first response
 * (skipping 1xx), or that the server closed the connection without one. `hung` after
 * `timeoutMs` of neither: the server kept a malformed request waiting.
 */
export async function rawRequest (port: number, bytes: string | Buffer, opts: { timeoutMs?: number, head?: boolean } = {}): Promise<RawOutcome> {
  const all = await rawExchange(port, bytes, { ...opts, max: 1 })
  return all[0] ?? { kind: 'hung' }
}

/**
 * Like rawRequest, but collects up to `max` responses (pipelining), stopping when the server
 * closes the connection. The last element is `closed` or `hung` when that is how it ended
 * before `max` responses arrived.
 */
export function rawExchange (port: number, bytes: string | Buffer, opts: { timeoutMs?: number, head?: boolean, max?: number } = {}): Promise<RawOutcome[]> {
  const max = opts.max ?? Infinity
  return new Promise((resolve) => {
    const out: RawOutcome[] = []
    let buf: Buffer = Buffer.alloc(0)
    let total = 0
    let settled = false
    const socket = net.connect(port, '127.0.0.1')
    const finish = (last?: RawOutcome): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (last !== undefined) out.push(last)
      socket.destroy()
      resolve(out)
    }
    const drain = (ended: boolean): void => {
      for (;;) {
        const parsed = parseResponse(buf, opts.head === true, ended)
        if (parsed === undefined) return
        buf = parsed.rest
        if (parsed.status >= 100 && parsed.status < 200) continue
        out.push({ kind: 'response', status: parsed.status, head: parsed.head, headers: parsed.headers, body: parsed.body, closedAfter: ended })
        if (out.length >= max) return finish()
      }
    }
    const timer = setTimeout(() => finish({ kind: 'hung' }), opts.timeoutMs ?? 5000)
    socket.on('error', () => {})
    socket.on('data', (chunk: Buffer) => {
      total += chunk.length
      buf = Buffer.concat([buf, chunk])
      drain(false)
    })
    socket.on('close', () => {
      if (settled) return
      drain(true)
      if (settled) return
      finish(out.length === 0 || buf.length > 0 ? { kind: 'closed', bytes: total } : undefined)
    })
    socket.on('connect', () => socket.write(bytes))
  })
}

/**
 * A `forwardcache-auth` header made by hand, exactly as src/security/signature.ts makes one:
 * HMAC-SHA256 over `method \n url \n t \n nonce`, base64url.
 */
export function forgeAuth (secret: string, method: string, url: string, audience: string, tSeconds = Math.floor(Date.now() / 1000), nonce = randomBytes(12).toString('base64url')): string {
  const s = createHmac('sha256', secret).update(`${method}\n${url}\n${audience}\n${tSeconds}\n${nonce}`).digest('base64url')
  return `v1 t=${tSeconds} n=${nonce} s=${s}`
}

/** One peer on its own server, with its own options (peers may differ from each other). */
export interface MountedPeer {
  readonly peer: Peer
  readonly server: http.Server
  readonly url: string
  /** Requests that reached this server (before the handler saw them), with their headers. */
  readonly seen: Array<{ method: string, url: string, headers: http.IncomingHttpHeaders }>
  close (): Promise<void>
}

/**
 * Starts servers first (so every URL is known), then one Peer per options object on them.
 * `peers` defaults to all of them.
 */
export async function startPeers (optionList: Array<Omit<PeerOptions, 'self' | 'peers'> & { peers?: string[] }>,
  intercept?: (i: number, req: http.IncomingMessage) => void): Promise<MountedPeer[]> {
  const servers = await Promise.all(optionList.map(() => listen()))
  const urls = servers.map((s) => s.url)
  const out: MountedPeer[] = []
  for (let i = 0; i < optionList.length; i++) {
    const { server, url } = servers[i] as { server: http.Server, url: string }
    const options = optionList[i] as Omit<PeerOptions, 'self' | 'peers'> & { peers?: string[] }
    const peer = new Peer({ ...options, self: url, peers: options.peers ?? urls })
    const handler = peer.handler()
    const seen: MountedPeer['seen'] = []
    server.on('request', (req, res) => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers } })
      intercept?.(i, req)
      handler(req, res)
    })
    out.push({
      peer,
      server,
      url,
      seen,
      close: async () => {
        await peer.destroy().catch(() => {})
        await stopServer(server)
      }
    })
  }
  await Promise.all(out.map((p) => p.peer.ready))
  return out
}

/** A small deterministic PRNG (mulberry32), so that interleavings can be replayed. */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
