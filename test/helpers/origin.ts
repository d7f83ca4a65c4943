import http from 'node:http'
import type { AddressInfo } from 'node:net'

export type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void

/** A real origin on loopback that counts every request it receives, per path. */
export interface CountingOrigin {
  readonly url: string
  readonly server: http.Server
  /** Requests seen for `path` (path and query), or in total without a path. */
  count (path?: string): number
  /** Every request seen, in order. */
  readonly log: Array<{ method: string, url: string, headers: http.IncomingHttpHeaders }>
  route (path: string, handler: Route): void
  close (): Promise<void>
}

/**
 * Starts an origin on 127.0.0.1, port 0. Unrouted paths answer 200 with
 * `Cache-Control: max-age=300` and a body naming the path. `now` stamps Date from a test clock.
 */
export async function startOrigin (fallback?: Route, now?: () => number): Promise<CountingOrigin> {
  const routes = new Map<string, Route>()
  const counts = new Map<string, number>()
  const log: CountingOrigin['log'] = []
  let total = 0
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/'
    total++
    counts.set(url, (counts.get(url) ?? 0) + 1)
    log.push({ method: req.method ?? '', url, headers: req.headers })
    // With an injected clock, the origin's Date must come from the same clock, or every
    // response would look old (RFC 9111 apparent_age) to a cache living in the future.
    if (now !== undefined) res.setHeader('date', new Date(now()).toUTCString())
    const route = routes.get(url.split('?')[0] as string) ?? fallback
    if (route !== undefined) return route(req, res)
    const body = `body of ${url}`
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  server.keepAliveTimeout = 1000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    log,
    count: (path?: string) => (path === undefined ? total : counts.get(path) ?? 0),
    route: (path, handler) => { routes.set(path, handler) },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  }
}

/**
 * A route whose one version has ETag "v1" and body `v1`, fresh for 60 s; a request whose
 * If-Match names another tag is answered 412 with no body and the headers `failed` adds
 * (some origins put the same Cache-Control on every response, a 412 included).
 */
export function ifMatchRoute (failed: http.OutgoingHttpHeaders = {}): Route {
  return (req, res) => {
    if (req.headers['if-match'] !== undefined && req.headers['if-match'] !== '"v1"') {
      res.writeHead(412, { ...failed, 'content-length': 0 })
      res.end()
      return
    }
    res.writeHead(200, { etag: '"v1"', 'cache-control': 'max-age=60', 'content-length': 2 })
    res.end('v1')
  }
}
