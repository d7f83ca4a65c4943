import dns from 'node:dns'
import net from 'node:net'
import { buildConnector } from 'undici'

/** An origin fetch refused because of where it would connect. */
export class ForbiddenAddressError extends Error {
  /** Always `'ForbiddenAddressError'`. */
  override readonly name = 'ForbiddenAddressError'
  /** Always `'FC_ERR_FORBIDDEN_ADDRESS'`. */
  readonly code = 'FC_ERR_FORBIDDEN_ADDRESS'
  constructor (host: string, address: string) {
    super(`refusing to connect to ${host} (${address}): the address is in a forbidden range`)
  }
}

/** An origin refused by the `origins` allowlist. */
export class ForbiddenOriginError extends Error {
  /** Always `'ForbiddenOriginError'`. */
  override readonly name = 'ForbiddenOriginError'
  /** Always `'FC_ERR_FORBIDDEN_ORIGIN'`. */
  readonly code = 'FC_ERR_FORBIDDEN_ORIGIN'
  constructor (origin: string) {
    super(`origin ${origin} is not in opts.origins`)
  }
}

// Never fetched, whatever the options: link-local (where cloud metadata services live) and
// the metadata addresses that sit outside it.
const ALWAYS_BLOCKED = new net.BlockList()
ALWAYS_BLOCKED.addSubnet('169.254.0.0', 16, 'ipv4')
ALWAYS_BLOCKED.addAddress('100.100.100.200', 'ipv4') // Alibaba Cloud metadata
ALWAYS_BLOCKED.addAddress('192.0.0.192', 'ipv4') // Oracle Cloud metadata
ALWAYS_BLOCKED.addSubnet('fe80::', 10, 'ipv6')
ALWAYS_BLOCKED.addAddress('fd00:ec2::254', 'ipv6') // AWS IMDS over IPv6
ALWAYS_BLOCKED.addAddress('fd00:ec2::23', 'ipv6') // AWS DNS over IPv6

// Blocked with `blockPrivateOrigins`: this machine and the private networks around it.
const PRIVATE = new net.BlockList()
PRIVATE.addSubnet('0.0.0.0', 8, 'ipv4')
PRIVATE.addSubnet('10.0.0.0', 8, 'ipv4')
PRIVATE.addSubnet('100.64.0.0', 10, 'ipv4')
PRIVATE.addSubnet('127.0.0.0', 8, 'ipv4')
PRIVATE.addSubnet('172.16.0.0', 12, 'ipv4')
PRIVATE.addSubnet('192.168.0.0', 16, 'ipv4')
PRIVATE.addSubnet('198.18.0.0', 15, 'ipv4')
PRIVATE.addAddress('::', 'ipv6')
PRIVATE.addAddress('::1', 'ipv6')
PRIVATE.addSubnet('fc00::', 7, 'ipv6')

/**
 * The IPv4 address embedded in an IPv6 one that reaches it (IPv4-mapped ::ffff:a.b.c.d in
 * either spelling, IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96), or undefined.
 */
export function embeddedIPv4 (address: string): string | undefined {
  const a = address.toLowerCase()
  const dotted = /^(?:::ffff:|::|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(a)
  if (dotted !== null) return dotted[1]
  const hex = /^(?:::ffff:|::|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(a)
  if (hex !== null) {
    const hi = parseInt(hex[1] as string, 16)
    const lo = parseInt(hex[2] as string, 16)
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
  }
  return undefined
}

/** Is a connection to this IP address forbidden? */
export function addressForbidden (address: string, blockPrivate: boolean): boolean {
  const bare = address.startsWith('[') ? address.slice(1, -1) : address
  const family = net.isIP(bare)
  if (family === 0) return false
  if (family === 6) {
    const v4 = embeddedIPv4(bare)
    if (v4 !== undefined) return addressForbidden(v4, blockPrivate)
  }
  const type = family === 4 ? 'ipv4' : 'ipv6'
  if (ALWAYS_BLOCKED.check(bare, type)) return true
  return blockPrivate && PRIVATE.check(bare, type)
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void

/**
 * A `lookup` for net/tls.connect that resolves normally and then refuses forbidden
 * addresses. The check is on the address the socket will actually connect to, so a name
 * that resolves differently at fetch time (DNS rebinding) gains nothing.
 */
export function guardedLookup (blockPrivate: boolean) {
  return function lookup (hostname: string, options: dns.LookupOptions, callback: LookupCallback): void {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err !== null) return callback(err, '')
      const list = addresses as dns.LookupAddress[]
      const bad = list.find((a) => addressForbidden(a.address, blockPrivate))
      if (bad !== undefined) return callback(Object.assign(new ForbiddenAddressError(hostname, bad.address), { errno: undefined }), '')
      if (options.all === true) return callback(null, list)
      const first = list[0]
      if (first === undefined) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '')
      callback(null, first.address, first.family)
    })
  }
}

type Connector = ReturnType<typeof buildConnector>

/**
 * undici's connector with the address policy in front: IP literals are checked before any
 * socket is opened, names through guardedLookup.
 */
export function guardedConnector (options: { timeout: number, blockPrivate: boolean, ca?: unknown }): Connector {
  const base = buildConnector({ timeout: options.timeout, lookup: guardedLookup(options.blockPrivate) } as buildConnector.BuildOptions)
  const connect: Connector = (opts, callback) => {
    const host = opts.hostname.startsWith('[') ? opts.hostname.slice(1, -1) : opts.hostname
    if (net.isIP(host) !== 0 && addressForbidden(host, options.blockPrivate)) {
      queueMicrotask(() => callback(new ForbiddenAddressError(opts.hostname, host), null))
      return
    }
    base(opts, callback)
  }
  return connect
}

/** One entry of opts.origins: a host, host:port, *.suffix, a full origin, or a RegExp over the origin. */
export type OriginRule = string | RegExp

/**
 * A host or host:port rule of opts.origins, spelled as URLs spell hosts: lower case, IDNs in
 * punycode, IPv6 in brackets and compressed. The port, when given, is compared with a URL's
 * effective port, so `example.com:443` matches `https://example.com`. Undefined when the rule
 * is not a host (a path, userinfo, an empty name).
 */
function parseHostRule (rule: string): { hostname: string, port: string | undefined } | undefined {
  let url: URL
  try {
    url = new URL(`http://${rule}`)
  } catch {
    return undefined
  }
  if (url.hostname === '' || url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || rule.endsWith('/')) return undefined
  // new URL drops :80 for http:, which the rule did name.
  const port = url.port !== '' ? url.port : /:\d+$/.test(rule) && !rule.endsWith(']') ? '80' : undefined
  return { hostname: url.hostname, port }
}

function effectivePort (url: URL): string {
  return url.port !== '' ? url.port : url.protocol === 'https:' ? '443' : '80'
}

/** A string rule of opts.origins, parsed; undefined when it names no origin or host. */
export type ParsedOriginRule =
  | { kind: 'origin', origin: string }
  | { kind: 'suffix', suffix: string }
  | { kind: 'host', hostname: string, port: string | undefined }

export function parseOriginRule (rule: string): ParsedOriginRule | undefined {
  if (rule.includes('://')) {
    let url: URL
    try {
      url = new URL(rule)
    } catch {
      return undefined
    }
    return url.host === '' ? undefined : { kind: 'origin', origin: url.origin }
  }
  if (rule.startsWith('*.')) {
    // A label stands in for the star, so the suffix is spelled as URLs spell hosts.
    const parsed = parseHostRule(`x${rule.slice(1)}`)
    return parsed === undefined ? undefined : { kind: 'suffix', suffix: parsed.hostname.slice(1) }
  }
  const parsed = parseHostRule(rule)
  return parsed === undefined ? undefined : { kind: 'host', ...parsed }
}

/** Compiles opts.origins into a predicate over URLs. */
export function originMatcher (rules: readonly OriginRule[]): (url: URL) => boolean {
  const tests = rules.map((rule): ((url: URL) => boolean) => {
    if (rule instanceof RegExp) {
      // A global or sticky RegExp keeps lastIndex between test() calls and would alternate
      // between matching and not: a copy without those flags answers the same every time.
      const re = rule.global || rule.sticky ? new RegExp(rule.source, rule.flags.replace(/[gy]/g, '')) : rule
      return (url) => re.test(url.origin)
    }
    const parsed = parseOriginRule(rule)
    if (parsed === undefined) return () => false
    if (parsed.kind === 'origin') {
      const { origin } = parsed
      return (url) => url.origin === origin
    }
    if (parsed.kind === 'suffix') {
      const { suffix } = parsed
      return (url) => url.hostname.endsWith(suffix) && url.hostname.length > suffix.length
    }
    const { hostname, port } = parsed
    return port === undefined ? (url) => url.hostname === hostname : (url) => url.hostname === hostname && effectivePort(url) === port
  })
  return (url) => tests.some((t) => t(url))
}
