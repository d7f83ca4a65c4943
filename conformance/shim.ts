// A forward shim for the http-tests/cache-tests conformance run: an HTTP server that answers
// every request by sending it to ORIGIN through a forwardcache Peer that owns every URL (a pool
// of just itself), so the suite's CLI talks to forwardcache as if it were a reverse proxy.
//
//   node dist/conformance/shim.js ORIGIN [PORT]         (or env ORIGIN, PORT)
//
// The shim adds nothing: it drops hop-by-hop fields both ways and passes the rest, bodies
// included (the CLI PUTs each test's config), and streams the response back.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { pipeline } from 'node:stream/promises'
import { pathToFileURL } from 'node:url'
import { request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'

// RFC 9110 section 7.6.1 (plus the legacy proxy-* ones): never forwarded by an intermediary.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade'])

function isHopByHop (name: string, connectionTokens: ReadonlySet<string>): boolean {
  return HOP_BY_HOP.has(name) || name.startsWith('proxy-') || connectionTokens.has(name)
}

function connectionTokens (value: string | string[] | undefined): Set<string> {
  if (value === undefined) return new Set()
  const joined = Array.isArray(value) ? value.join(',') : value
  return new Set(joined.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== ''))
}

/** The request's end-to-end fields. Host goes too: the target URL decides it. */
function requestHeaders (req: http.IncomingMessage): Record<string, string | string[]> {
  const named = connectionTokens(req.headers.connection)
  const out: Record<string, string | string[]> = {}
  // rawHeaders keeps repeated fields as they came.
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] as string).toLowerCase()
    const value = req.rawHeaders[i + 1] as string
    if (name === 'host' || isHopByHop(name, named)) continue
    const prev = out[name]
    if (prev === undefined) out[name] = value
    else if (Array.isArray(prev)) prev.push(value)
    else out[name] = [prev, value]
  }
  return out
}

function responseHeaders (headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const named = connectionTokens(headers.connection)
  const out: Record<string, string | string[]> = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || isHopByHop(name.toLowerCase(), named)) continue
    out[name] = value
  }
  return out
}

export interface Shim {
  /** http://127.0.0.1:PORT */
  readonly url: string
  readonly peer: Peer
  close (): Promise<void>
}

export interface ShimOptions {
  /** The origin every request goes to, e.g. http://127.0.0.1:8000 */
  origin: string
  /** Port to listen on (127.0.0.1); 0 picks a free one. */
  port?: number
}

/** Starts the shim; resolves once it listens. */
export async function startShim (opts: ShimOptions): Promise<Shim> {
  const origin = opts.origin.replace(/\/+$/, '')
  // A pool of just itself: this peer owns every URL and serves it from its own cache.
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  await peer.ready

  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET'
    // GET and HEAD carry no body through a Peer; other methods pass theirs on as it streams in.
    const withBody = method !== 'GET' && method !== 'HEAD' &&
      ((req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0') ||
        req.headers['transfer-encoding'] !== undefined)
    request(origin + (req.url ?? '/'), {
      method: method as Dispatcher.HttpMethod,
      headers: requestHeaders(req),
      body: withBody ? req : null,
      dispatcher: peer,
      // Interim responses are passed on as they come, as far as node:http can send them.
      onInfo: ({ statusCode, headers }) => {
        if (res.headersSent) return
        if (statusCode === 102) res.writeProcessing()
        else if (statusCode === 103) res.writeEarlyHints(responseHeaders(headers))
      }
    }).then(async (upstream) => {
      res.writeHead(upstream.statusCode, upstream.statusText, responseHeaders(upstream.headers))
      await pipeline(upstream.body, res)
    }).catch((err: Error) => {
      if (!res.headersSent) {
        const body = `forwardcache conformance shim: ${err.name}: ${err.message}\n`
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      } else {
        res.destroy(err)
      }
    })
  })
  server.keepAliveTimeout = 5000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    peer,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await peer.close()
    }
  }
}

// Run directly: node dist/conformance/shim.js ORIGIN [PORT]
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const origin = process.argv[2] ?? process.env.ORIGIN
  const port = Number(process.argv[3] ?? process.env.PORT ?? 0)
  if (origin === undefined || !/^https?:\/\//.test(origin) || !Number.isInteger(port) || port < 0) {
    console.error('usage: node dist/conformance/shim.js ORIGIN [PORT]   (or env ORIGIN=http://127.0.0.1:8000 PORT=8080)')
    process.exit(2)
  }
  const shim = await startShim({ origin, port })
  console.log(`forwardcache shim on ${shim.url} -> ${origin}`)
  const stop = (): void => { shim.close().then(() => process.exit(0), () => process.exit(1)) }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}
